"""``fhir-server serve --workers N`` (serving.py): connections opened at once are spread over the workers (each
listens on its own SO_REUSEPORT socket), a worker that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhir_server.serving import spreads_connections
from tests.support.server import free_port

pytestmark = pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux only")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (spawn also starts a resource tracker, which serves nothing)."""
    return [c for c in _children(pid) if "multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_text()]


def _established(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` holds open (its socket inodes in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_up(process, port)
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=40)


def _wait_until_up(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "server did not start within 60 s"
        time.sleep(0.2)


def test_connections_opened_at_once_reach_every_worker(served):
    """16 connections opened together, as an EHR's pool or a load balancer opens them, and then used.  (On an idle
    server uvicorn's shared socket spreads these too; the starved worker appeared under load, in bench/scoring.py,
    which reports how the work was shared.)"""
    process, port = served
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
    try:
        for connection in connections:
            connection.sendall(f"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        for connection in connections:
            assert connection.recv(64).startswith(b"HTTP/1.1 200")
        workers = _workers(process.pid)
        assert len(workers) == 2
        held = [_established(worker, port) for worker in workers]
        assert sum(held) == 16 and min(held) >= 1, held
    finally:
        for connection in connections:
            connection.close()


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_them_all(served):
    process, port = served
    first = _workers(process.pid)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = _workers(process.pid)
        if len(now) == 2 and first[0] not in now:
            break
        assert time.monotonic() < deadline, f"no replacement worker: {now}"
        time.sleep(0.2)
    for _ in range(8):  # the port answers throughout (the other worker, then both)
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=10).status_code == 200
    workers = _workers(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


def test_a_second_server_on_the_same_port_is_refused(served, tmp_path):
    """SO_REUSEPORT would let a second instance share the port (and split the traffic between two databases)."""
    _, port = served
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    second = subprocess.run(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr + second.stdout


def test_workers_do_not_outlive_a_killed_supervisor(served):
    process, port = served
    workers = _workers(process.pid)
    process.kill()  # SIGKILL: no chance to stop its workers itself
    process.wait(timeout=10)
    deadline = time.monotonic() + 40
    while [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in _state(w)]:
        assert time.monotonic() < deadline, "workers still running after their supervisor died"
        time.sleep(0.2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2)


def _state(pid: int) -> str:
    try:
        return {"Z": "zombie"}.get(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0], "running")
    except OSError:
        return "zombie"

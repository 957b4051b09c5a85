"""Shared benchmark plumbing: a fresh database, the server as its own process, progress and tables."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bench.loadgen import percentiles

ROOT = Path(__file__).resolve().parent.parent
# Bench databases are thrown away: a key per run for the secrets they store (app-session tokens, the signing key),
# shared with the servers started below through the environment (store/crypto.py).
os.environ.setdefault("FHIR_SERVER_SECRET_KEY", base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())


@contextmanager
def fresh_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    root: str
    port: int
    pid: int = 0

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each worker process of the server (Linux /proc; empty elsewhere)."""
        used = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid and "spawn" in (entry / "cmdline").read_text():
                used[int(entry.name)] = _cpu_seconds(fields)
        return used


def _cpu_seconds(fields: list[str]) -> float:
    """utime + stime of a /proc/<pid>/stat line's fields after the command name."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks


def postgres_cpu() -> float | None:
    """CPU seconds used so far by the PostgreSQL processes on this machine (Linux /proc), None if none is
    visible (a remote database, another system).  Includes other databases' backends: run on a quiet machine."""
    total, seen = 0.0, False
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            total += _cpu_seconds((entry / "stat").read_text().rsplit(")", 1)[1].split())
            seen = True
        except OSError:
            continue
    return total if seen else None


@dataclass(frozen=True)
class MachineTimes:
    """The machine's CPU time so far by kind (/proc/stat, in seconds over all cores)."""

    busy: float
    idle: float
    steal: float

    @classmethod
    def now(cls) -> MachineTimes | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq, steal = (v / ticks for v in values[:8])
        return cls(user + nice + system + irq + softirq, idle + iowait, steal)

    def shares_since(self, before: MachineTimes) -> dict[str, float]:
        """Busy, idle and stolen (taken by the host for other guests) as shares of the time in between."""
        busy, idle, steal = self.busy - before.busy, self.idle - before.idle, self.steal - before.steal
        whole = busy + idle + steal
        return {"busy": busy / whole, "idle": idle / whole, "steal": steal / whole} if whole else {}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_server(database_url: str, workers: int, *, code: Path = ROOT, **settings: str) -> Iterator[Server]:
    """``fhir-server serve`` on its own port; ``settings`` are FHIR_SERVER_* variables for this process.  ``code``:
    the checkout whose server runs (another one, e.g. a ``git worktree`` of older code, to compare against)."""
    port = _free_port()
    # The benchmarks measure the data path; token checks and audit records are measured separately.
    env = {
        **os.environ,
        "FHIR_SERVER_DATABASE_URL": database_url,
        "FHIR_SERVER_LOG_LEVEL": "warning",
        "FHIR_SERVER_AUTH_REQUIRED": "false",
        # the checkout's own package, ahead of the installed (editable) one
        "PYTHONPATH": str(code),
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{root}/fhir/metadata")
        yield Server(root, port, process.pid)
    finally:
        _stop(process)


@contextmanager
def start_bare_app(database_url: str, workers: int) -> Iterator[Server]:
    """bench/bare_app.py under uvicorn, the same way the server runs."""
    port = _free_port()
    env = {**os.environ, "BARE_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_up(process, f"http://127.0.0.1:{port}/fhir/Patient/none", ok_status=404)
        yield Server(f"http://127.0.0.1:{port}", port)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s (uvicorn's own workers sometimes wait on keep-alive
    connections the load generator left open)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def _wait_until_up(process: subprocess.Popen, url: str, ok_status: int = 200) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == ok_status:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:  # still starting: its stderr would not end (reading it would wait forever)
                process.kill()
                process.wait(timeout=30)
            error = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise RuntimeError(f"process did not start: {error}")
        time.sleep(0.2)


class FsyncProbe:
    """The disk's own commit latency while a benchmark runs: a thread writes 8 kB to a scratch file and
    ``fdatasync``s it every 20 ms (what a database commit waits for), on the temporary directory's disk (the
    database's, on the development machine).  A request stalled by the disk shows as a probe stall at the same
    moment, whatever the server did."""

    INTERVAL = 0.02

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with tempfile.NamedTemporaryFile(prefix="fsync-probe-") as scratch:
            block = b"\0" * 8192
            while not self._stop.wait(self.INTERVAL):
                os.write(scratch.fileno(), block)
                started = time.perf_counter()
                os.fdatasync(scratch.fileno())
                self.latencies.append(time.perf_counter() - started)

    def summary(self) -> dict[str, float]:
        over = sum(1 for latency in self.latencies if latency > 0.05)
        return {"syncs": len(self.latencies), "over_50_ms": over, **percentiles(list(self.latencies))}


def progress(label: str, done: int, total: int, width: int = 30) -> None:
    done = min(done, total)
    filled = int(width * done / total) if total else width
    end = "\n" if done >= total else ""
    print(f"\r{label:<22} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, flush=True)


def table(header: list[str], rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)

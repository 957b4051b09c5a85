"""Searches from a PostgreSQL streaming replica (FHIR_SERVER_READ_REPLICA_URL, fhir_server/store/replica.py).

A real primary and a real streaming replica (tests/support/pg_cluster.py) under a real server: replay paused on the
replica shows which database answered.  A caller who did not write reads the replica (and misses what it has not
replayed); the caller who wrote reads its own writes; a replica that is stopped leaves the primary answering; the
lag and the reads by target are in /metrics.  Authorization on: two clients, each with its own token.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fhir_server.config import Settings
from tests.support.pg_cluster import PrimaryWithReplica, require_server_binaries
from tests.support.process import ROOT, cli, environment, wait_until_up
from tests.support.server import RunningServer, ServerThread, free_port
from tests.support.tokens import client_for, mint
from tests.support.waiting import wait_for

SEARCH_ROUTE = "/fhir/{resource_type}"
SCOPE = "system/Patient.cruds"


@pytest.fixture(scope="module")
def pair() -> Iterator[PrimaryWithReplica]:
    with PrimaryWithReplica(require_server_binaries()) as clusters:
        yield clusters


@pytest.fixture(scope="module")
def server(pair: PrimaryWithReplica) -> Iterator[RunningServer]:
    settings = Settings(
        database_url=pair.primary_url,
        read_replica_url=pair.replica_url,
        auth_required=True,
        load_library=False,
        db_pool_size=4,
        _env_file=None,
    )
    with ServerThread(settings, "postgresql") as running:
        caught_up(running)
        yield running


@pytest.fixture(scope="module")
def writer(server: RunningServer) -> Iterator[httpx.Client]:
    """Client B: writes, then reads its own writes."""
    with client_for(server, mint(server, SCOPE, client_id="client-b", sub="client-b")) as client:
        yield client


@pytest.fixture(scope="module")
def reader(server: RunningServer) -> Iterator[httpx.Client]:
    """Client A: never writes."""
    with client_for(server, mint(server, SCOPE, client_id="client-a", sub="client-a")) as client:
        yield client


@pytest.fixture
def replay_paused(pair: PrimaryWithReplica) -> Iterator[None]:
    pair.pause_replay()
    try:
        yield
    finally:
        pair.resume_replay()


def metrics(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.root}/metrics", timeout=10).raise_for_status().text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(server: RunningServer, name: str, **labels: str) -> float | None:
    return metrics(server).get((name, tuple(sorted(labels.items()))))


def caught_up(server: RunningServer) -> None:
    """Until the server's poller has seen the replica up and with nothing left to replay."""
    wait_for(lambda: metric(server, "fhir_server_replica_up") == 1.0, "the replica is seen up")
    wait_for(lambda: metric(server, "fhir_server_replica_lag_seconds") == 0.0, "the replica is seen caught up")


def reads(server: RunningServer, target: str, route: str = SEARCH_ROUTE) -> float:
    return metric(server, "fhir_server_reads_total", route=route, target=target) or 0.0


def counted(server: RunningServer, target: str, expected: float) -> None:
    """The searches counted by target (a request is counted just after its answer is sent: wait for it)."""
    wait_for(lambda: reads(server, target) == expected, f"{expected:g} searches answered by the {target}", timeout=10)


def create_patient(client: httpx.Client) -> tuple[str, str]:
    """A new Patient; its identifier value and id."""
    value = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test:replica", "value": value}]}
    answer = client.post("/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 201, answer.text
    return value, answer.json()["id"]


def found(client: httpx.Client, value: str) -> list[dict[str, Any]]:
    answer = client.get("/Patient", params={"identifier": f"urn:test:replica|{value}"})
    assert answer.status_code == 200, answer.text
    return answer.json().get("entry", [])


def test_a_caller_who_did_not_write_is_answered_from_the_replica(server, pair, writer, reader):
    pair.pause_replay()
    try:
        before = reads(server, "replica")
        value, patient_id = create_patient(writer)
        assert found(reader, value) == []  # not replayed: the replica answered
        assert reader.get(f"/Patient/{patient_id}").status_code == 404
        counted(server, "replica", before + 1)
    finally:
        pair.resume_replay()
    entries = wait_for(lambda: found(reader, value), "the search finds the Patient once the replica replays it")
    assert [e["resource"]["id"] for e in entries] == [patient_id]
    assert reader.get(f"/Patient/{patient_id}").status_code == 200


def test_the_caller_who_wrote_reads_its_own_writes(server, writer, replay_paused):
    before = reads(server, "primary")
    value, patient_id = create_patient(writer)
    assert [e["resource"]["id"] for e in found(writer, value)] == [patient_id]
    assert writer.get(f"/Patient/{patient_id}").status_code == 200
    assert writer.get(f"/Patient/{patient_id}/_history/1").status_code == 200
    history = writer.get(f"/Patient/{patient_id}/_history")
    assert history.status_code == 200
    assert [e["resource"]["id"] for e in history.json().get("entry", [])] == [patient_id]
    counted(server, "primary", before + 1)  # the search went to the primary: the writer's position is not replayed


def test_the_lag_metric_rises_while_replay_is_paused(server, pair, writer):
    caught_up(server)
    pair.pause_replay()
    try:
        create_patient(writer)  # something to replay
        wait_for(lambda: (metric(server, "fhir_server_replica_lag_seconds") or 0) > 1.0, "the lag rises")
    finally:
        pair.resume_replay()
    wait_for(lambda: metric(server, "fhir_server_replica_lag_seconds") == 0.0, "the lag falls back to 0")


def test_read_your_writes_holds_across_the_worker_processes(pair, tmp_path):
    """``serve --workers 2``: the kernel spreads connections over the workers, so a caller's next request may land
    on a process that did not make its write.  The write positions are shared by the processes (WriteMarks): with
    replay paused, every search of the writer on a new connection sees its write, while another caller's searches
    are answered by the replica and do not.  Authorization off: a caller is its address (127.0.0.1, 127.0.0.2)."""
    port, log = free_port(), tmp_path / "workers.log"
    settings = {
        "FHIR_SERVER_DATABASE_URL": pair.primary_url,
        "FHIR_SERVER_READ_REPLICA_URL": pair.replica_url,
        "FHIR_SERVER_AUTH_REQUIRED": "false",
        "FHIR_SERVER_LOAD_LIBRARY": "false",
        "FHIR_SERVER_DB_POOL_SIZE": "2",
        "FHIR_SERVER_LOG_LEVEL": "warning",
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--workers", "2", "--port", str(port)],
            env=environment(**settings),
            cwd=ROOT,
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}/fhir"

    def searches(address: str, value: str) -> list[list[str]]:
        """Eight searches, each on a new connection from ``address``: the ids each found."""
        found_ids = []
        for _ in range(8):
            transport = httpx.HTTPTransport(local_address=address)
            with httpx.Client(base_url=base, transport=transport, timeout=30) as client:
                answer = client.get("/Patient", params={"identifier": f"urn:test:replica|{value}"})
            assert answer.status_code == 200, answer.text
            found_ids.append([e["resource"]["id"] for e in answer.json().get("entry", [])])
        return found_ids

    try:
        wait_until_up(f"{base}/metadata", process, log)
        wait_for(lambda: listening(port) == 2, "both workers listen")
        pair.pause_replay()
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                value, patient_id = create_patient(client)
            # Until both workers' pollers have seen the replica: then another caller is answered by it, everywhere.
            wait_for(lambda: searches("127.0.0.2", value) == [[]] * 8, "another caller is answered by the replica")
            assert searches("127.0.0.1", value) == [[patient_id]] * 8, log.read_text()
        finally:
            pair.resume_replay()
    finally:
        process.terminate()
        process.wait(timeout=30)


def listening(port: int) -> int:
    """Sockets listening on the port (each worker has its own, SO_REUSEPORT)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_stopped_replica_leaves_the_primary_answering(server, pair, writer, reader):
    """Last in the module: it stops the replica (and starts it again)."""
    value, patient_id = create_patient(writer)
    wait_for(lambda: found(reader, value), "the replica has the Patient")
    records = Records()
    logger = logging.getLogger("fhir_server.replica")
    logger.addHandler(records)
    try:
        pair.stop_replica()
        for _ in range(3):
            assert [e["resource"]["id"] for e in found(reader, value)] == [patient_id]  # 200, from the primary
        assert reader.get(f"/Patient/{patient_id}").status_code == 200
        assert metric(server, "fhir_server_replica_up") == 0.0
        assert httpx.get(f"{server.root}/readyz", timeout=10).status_code == 200  # the primary serves: ready
        unreachable = [m for m in records.messages if "unreachable" in m]
        assert len(unreachable) == 1, records.messages  # once per outage, not per request
    finally:
        pair.start_replica()
        logger.removeHandler(records)
    caught_up(server)
    before = reads(server, "replica")
    assert found(reader, value)
    counted(server, "replica", before + 1)  # back on the replica


def test_serve_refuses_a_replica_it_cannot_use(backend, database_url, tmp_path):
    """One line, before anything starts: a SQLite database has no replica; a replica URL must be PostgreSQL.  The
    line names the settings, never a URL (it may carry a password)."""
    if backend == "sqlite":
        replica = "postgresql://postgres:secret@127.0.0.1:1/none"
        expected = "FHIR_SERVER_READ_REPLICA_URL needs a PostgreSQL database"
    else:
        replica = f"sqlite:///{tmp_path / 'secret-replica.db'}"
        expected = "FHIR_SERVER_READ_REPLICA_URL must be a postgresql:// URL"
    done = cli(database_url, "serve", "--port", str(free_port()), env={"FHIR_SERVER_READ_REPLICA_URL": replica})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fhir-server: not starting: {expected}"), done.stderr
    assert "secret" not in done.stderr and "Traceback" not in done.stderr

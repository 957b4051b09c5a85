"""The audit batch lag in /metrics (issue 24, point 3; web/audit_metrics.py): while the database will not take the
read audit records, they wait in the process's queue, and /metrics shows how many and how long the oldest has
waited; once the database takes them again, they are all stored and the lag falls back to 0."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from fastapi.testclient import TestClient

from fhir_server.store.migrate import upgrade
from tests.ops.instances import wait_until
from tests.ops.test_health import app_client, fresh_database, settings_for

READS = 5


def _token(client: TestClient) -> str:
    now = int(time.time())
    claims = {
        "iss": "http://testserver/auth",
        "aud": "http://testserver/fhir",
        "sub": "lag-test",
        "client_id": "lag-test",
        "scope": "system/Patient.cruds",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    return client.app.state.keys.sign(claims)


def _gauge(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


@contextmanager
def _writes_refused(url: str) -> Iterator[None]:
    """Another session holds the lock writers need; reads go on.  SQLite: the database's write lock (our writer
    gives up after its busy timeout and keeps the batch); PostgreSQL: the resources table locked against writes
    (our writer waits, its batch in flight)."""
    if url.startswith("sqlite"):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        with psycopg.connect(url) as holder:  # a transaction until the block ends
            holder.execute("LOCK TABLE resources IN EXCLUSIVE MODE")  # SELECTs pass, INSERTs wait
            yield
            holder.rollback()


def test_the_audit_batch_lag_shows_records_the_database_has_not_taken(backend):
    with fresh_database(backend) as url:
        upgrade(url)
        with app_client(settings_for(url, auth_required=True, sqlite_busy_timeout_ms=100)) as client:
            _lag_while_writes_are_refused(client, url)


def _lag_while_writes_are_refused(client: TestClient, url: str) -> None:
    headers = {"Authorization": f"Bearer {_token(client)}"}
    patient = f"lag-{uuid.uuid4().hex[:8]}"
    created = client.put(f"/fhir/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=headers)
    assert created.status_code == 201, created.text
    wait_until(lambda: _gauge(client, "fhir_server_audit_queue_depth") == 0, "nothing queued", timeout=10)
    assert _gauge(client, "fhir_server_audit_batch_lag_seconds") == 0
    stored_before = _gauge(client, "fhir_server_audit_records_stored_total")
    with _writes_refused(url):
        for _ in range(READS):
            assert client.get(f"/fhir/Patient/{patient}", headers=headers).status_code == 200
        time.sleep(0.8)  # several flush intervals (0.2 s) without the database taking the batch
        assert _gauge(client, "fhir_server_audit_queue_depth") == READS
        assert _gauge(client, "fhir_server_audit_batch_lag_seconds") >= 0.7
    stored = f"{READS} records stored"
    wait_until(
        lambda: _gauge(client, "fhir_server_audit_records_stored_total") == stored_before + READS,
        stored,
        timeout=15,
    )
    assert _gauge(client, "fhir_server_audit_queue_depth") == 0
    assert _gauge(client, "fhir_server_audit_batch_lag_seconds") == 0
    assert _gauge(client, "fhir_server_audit_records_dropped_total") == 0


def test_a_flush_returns_only_once_the_batch_in_flight_is_stored(backend):
    """flush() (shutdown, a test) is a barrier: while the writer's batch waits on the database, a flush called
    meanwhile waits for it too, so every record queued before the call is stored when it returns."""
    with fresh_database(backend) as url:
        upgrade(url)
        settings = settings_for(url, auth_required=True, sqlite_busy_timeout_ms=5000)
        with app_client(settings) as client:
            headers = {"Authorization": f"Bearer {_token(client)}"}
            patient = f"flush-{uuid.uuid4().hex[:8]}"
            client.put(f"/fhir/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=headers)
            wait_until(lambda: _gauge(client, "fhir_server_audit_queue_depth") == 0, "nothing queued", timeout=10)
            stored_before = _gauge(client, "fhir_server_audit_records_stored_total")
            flusher = threading.Thread(target=client.app.state.audit.flush)
            with _writes_refused(url):
                for _ in range(READS):
                    assert client.get(f"/fhir/Patient/{patient}", headers=headers).status_code == 200
                time.sleep(0.5)  # the writer has taken the batch and waits on the lock
                flusher.start()
                time.sleep(0.5)
                assert flusher.is_alive(), "flush returned while the batch in flight was not stored"
            flusher.join(timeout=15)
            assert not flusher.is_alive()
            assert _gauge(client, "fhir_server_audit_records_stored_total") == stored_before + READS


def test_a_flush_with_a_time_limit_gives_up_on_a_writer_stuck_on_the_database(backend, caplog):
    """Shutdown's flush waits 5 s at most for the batch in flight (the server must stop), says so, and leaves the
    records queued: nothing is counted as stored that was not."""
    with fresh_database(backend) as url:
        upgrade(url)
        settings = settings_for(url, auth_required=True, sqlite_busy_timeout_ms=5000)
        with app_client(settings) as client:
            headers = {"Authorization": f"Bearer {_token(client)}"}
            patient = f"stuck-{uuid.uuid4().hex[:8]}"
            client.put(f"/fhir/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=headers)
            audit = client.app.state.audit
            wait_until(lambda: _gauge(client, "fhir_server_audit_queue_depth") == 0, "nothing queued", timeout=10)
            with _writes_refused(url):
                assert client.get(f"/fhir/Patient/{patient}", headers=headers).status_code == 200
                time.sleep(0.5)  # the writer has taken the read's record and waits on the lock
                started = time.monotonic()
                assert audit.flush(wait=0.3) == 0
                assert 0.25 <= time.monotonic() - started < 3
                assert "audit flush gave up" in caplog.text
                assert audit.backlog()[0] >= 1  # the record is still held, not lost
            wait_until(lambda: audit.backlog()[0] == 0, "the record stored once the database answers", timeout=15)

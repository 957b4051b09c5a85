"""Read audit records are written in batches by a background thread (auth/audit.py); a clean shutdown (SIGTERM,
as a supervisor or an orchestrator stops the server) stores every record still queued before the process exits
(issue 23, point 1: nothing lost on a clean shutdown), on both databases, whether the reads came one after the
other or from several clients at once (audit completeness under load: N reads answered, N read AuditEvents)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from fhir_server.auth.keys import KeyStore
from tests.support.databases import fresh_database
from tests.support.process import server_process

READS = 60
CLIENTS, READS_EACH = 8, 40


def _token(database_url: str, audience: str, scope: str) -> str:
    engine = create_engine(database_url)
    try:
        now = int(time.time())
        claims = {
            "iss": audience.removesuffix("/fhir") + "/auth",
            "aud": audience,
            "sub": "auditor",
            "client_id": "shutdown-test",
            "scope": scope,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 300,
        }
        return KeyStore(engine).sign(claims)
    finally:
        engine.dispose()


def _read_events(database_url: str, patient: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT content FROM resources WHERE resource_type = 'AuditEvent' AND deleted = :no"),
                {"no": False},
            ).all()
    finally:
        engine.dispose()
    events = [orjson.loads(row[0]) for row in rows]
    return sum(
        1
        for e in events
        if e.get("action") == "R" and any(x.get("what", {}).get("reference") == patient for x in e.get("entity", []))
    )


@pytest.mark.parametrize("clients", [1, CLIENTS], ids=["one-client", "concurrent-clients"])
def test_a_clean_shutdown_stores_every_queued_read_audit_record(backend: str, clients: int):
    reads_each = READS if clients == 1 else READS_EACH
    with fresh_database(backend) as url, server_process(url, FHIR_SERVER_AUTH_REQUIRED="true") as server:
        token = _token(url, server.fhir_base, "system/Patient.cruds")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        patient = f"shutdown-{uuid.uuid4().hex[:8]}"

        def read(_: int) -> int:
            answered = 0
            with httpx.Client(base_url=server.fhir_base, headers=headers, timeout=30) as client:
                for _ in range(reads_each):  # the last ones are still in the writer's queue when SIGTERM arrives
                    answered += client.get(f"/Patient/{patient}").status_code == 200
            return answered

        with httpx.Client(base_url=server.fhir_base, headers=headers, timeout=30) as client:
            created = client.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
            assert created.status_code == 201, created.text
        with ThreadPoolExecutor(clients) as pool:
            answered = sum(pool.map(read, range(clients)))
        assert answered == clients * reads_each
        server.stop()  # SIGTERM, then wait for the process to exit
        assert _read_events(url, f"Patient/{patient}") == answered

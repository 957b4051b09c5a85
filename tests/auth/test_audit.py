"""Audit (issue 6 point 4; IHE Basic Audit Log Patterns; HIPAA §164.312(b)): every read, search, write and denial
of patient data leaves an AuditEvent, writes in the same transaction as the data, searchable by patient, agent,
date and outcome for a caller with the right scope — and never readable without it."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.validation import validate_resource
from tests.support.access_data import Records, admin, observation, seed
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

THERAPIST = "Practitioner/therapist-audit"


@pytest.fixture(scope="module")
def records(guarded: RunningServer) -> tuple[Records, Records]:
    return seed(guarded, uuid.uuid4().hex[:10])


def _events(server: RunningServer, **params: str) -> list[dict]:
    with client_for(server, mint(server, "system/AuditEvent.rs")) as c:
        answer = c.get("/AuditEvent", params={"_count": "500", **params})
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def _eventually(server: RunningServer, predicate, **params: str) -> list[dict]:
    """Reads are audited by a background writer that flushes every 200 ms."""
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in _events(server, **params) if predicate(e)]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def _entities(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


def test_a_read_is_audited_with_who_what_and_patient(guarded, records):
    a, _ = records
    target = f"Observation/{a.one('Observation')}"
    token = mint(guarded, "user/*.rs openid fhirUser", fhirUser=THERAPIST, client_id="ehr-app")
    with client_for(guarded, token) as c:
        assert c.get(f"/{target}").status_code == 200
    events = _eventually(guarded, lambda e: target in _entities(e) and e["action"] == "R", patient=a.patient)
    assert events, "the read left an AuditEvent found by patient"
    event = events[0]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["subtype"][0]["code"] == "read"
    assert event["agent"][0]["who"]["reference"] == THERAPIST
    assert event["agent"][0]["altId"] == "ehr-app"
    assert f"Patient/{a.patient}" in _entities(event)
    validate_resource(event, "AuditEvent")
    assert _events(guarded, agent=THERAPIST, entity=target)
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(e["id"] == event["id"] for e in _events(guarded, date=f"ge{since}", outcome="0", entity=target))


def test_a_write_is_audited_in_its_own_transaction(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, "launch/patient patient/Observation.c", patient=a.patient)) as c:
        created = c.post("/Observation", json=observation(a.patient))
    assert created.status_code == 201, created.text
    reference = f"Observation/{created.json()['id']}"
    # no waiting: the record was committed with the Observation
    events = _events(guarded, entity=reference)
    assert [e["action"] for e in events] == ["C"]
    assert f"Patient/{a.patient}" in _entities(events[0])


def test_a_denial_is_audited(guarded, records):
    a, b = records
    target = f"Observation/{b.one('Observation')}"
    with client_for(guarded, mint(guarded, "launch/patient patient/*.rs", patient=a.patient)) as c:
        assert c.get(f"/{target}").status_code == 404
    events = _eventually(guarded, lambda e: target in _entities(e), outcome="4")
    assert events and events[0]["outcome"] == "4"


def test_a_search_is_audited(guarded, records):
    a, _ = records
    marker = uuid.uuid4().hex
    with client_for(guarded, mint(guarded, "launch/patient patient/*.rs", patient=a.patient)) as c:
        assert c.get("/Flag", params={"status": "active", "_tag": marker}).status_code == 200
    events = _eventually(
        guarded,
        lambda e: any(marker in _query(x) for x in e.get("entity", [])),
        patient=a.patient,
        subtype="search-type",
    )
    assert events, "the search left an AuditEvent carrying its query"


def _query(entity: dict) -> str:
    import base64

    return base64.b64decode(entity["query"]).decode() if "query" in entity else ""


def test_audit_trail_needs_its_own_scope(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, "user/Observation.rs", fhirUser=THERAPIST)) as c:
        answer = c.get("/AuditEvent", params={"patient": a.patient})
    assert answer.status_code == 403
    with admin(guarded) as c:
        assert c.get("/AuditEvent", params={"patient": a.patient}).status_code == 200


def test_audit_records_are_indexed_only_for_the_searches_audit_reviews_run(guarded, records):
    """Issue 23: an AuditEvent is written for every read; its index rows are those of the parameters audit reviews
    search by, and a search by another R4 parameter is a 400 that says so (never a silent empty result)."""
    from fhir_server.search.indexer import SearchIndexer
    from fhir_server.search.registry import INDEXED_ONLY, default_registry

    a, _ = records
    events = _eventually(guarded, lambda e: True, patient=a.patient)
    assert events
    rows = SearchIndexer(default_registry()).index_rows("AuditEvent", events[0])
    params = {row["param"].partition(":")[0] for table in rows.values() for row in table}
    assert params <= INDEXED_ONLY["AuditEvent"] | {"_tag", "_profile", "_security", "_source"}
    assert {"agent", "date", "patient", "entity", "type"} <= params
    with client_for(guarded, mint(guarded, "system/AuditEvent.rs")) as c:
        refused = c.get("/AuditEvent", params={"agent-name": "someone"})
        assert refused.status_code == 400 and "indexed only for the searches audit reviews run" in refused.text
        assert c.get("/AuditEvent", params={"outcome": "0", "_count": "1"}).status_code == 200
        statement = c.get("/metadata").json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    declared = {p["name"] for p in audit.get("searchParam", [])}
    assert "agent-name" not in declared and {"agent", "patient", "date"} <= declared

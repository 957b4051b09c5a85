"""Who may erase, and ``[type]/[id]/$expunge`` of one resource, on both databases: only with the server's setting on,
and only a Backend Services token holding ``fhir-server/expunge`` and a system/ scope that deletes (a real one from
the token endpoint, and signed ones); a patient's or a user's token never; refusals leave everything in place and
are audited.  A patient with a write-back still pending is refused (409) unless forced.  One resource's erasure
removes its history alone."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from fhir_server.auth.scope_policy import for_backend, for_user_app
from fhir_server.operations.expunge import DISABLED
from fhir_server.store import ehr_store
from tests.api.fhir import assert_outcome
from tests.auth.smart_support import assertion, backend_key, backend_token, public_jwks, register_client
from tests.erasure.support import ERASER_SCOPE, FHIR_JSON, created, eraser, erasure_server
from tests.support.tokens import client_for, mint

FORCE = {"resourceType": "Parameters", "parameter": [{"name": "force", "valueBoolean": True}]}


def _patient(c: httpx.Client) -> str:
    patient = f"p{uuid.uuid4().hex[:12]}"
    body = {"resourceType": "Patient", "id": patient, "name": [{"family": "Access"}]}
    created(c.put(f"/Patient/{patient}", json=body, headers=FHIR_JSON))
    return patient


def _observation(c: httpx.Client, patient: str, versions: int = 1) -> str:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "code": {"text": "note"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    observation = created(c.post("/Observation", json=body, headers=FHIR_JSON))["id"]
    for _ in range(versions - 1):
        body = {**body, "id": observation, "status": "final", "valueString": uuid.uuid4().hex}
        created(c.put(f"/Observation/{observation}", json=body, headers=FHIR_JSON))
    return observation


def test_the_capability_statement_lists_it_when_enabled(admin):
    statement = admin.get("/metadata").json()
    listed = {
        r["type"]
        for r in statement["rest"][0]["resource"]
        if any(o["name"] == "expunge" for o in r.get("operation", []))
    }
    assert {"Patient", "Observation", "QuestionnaireResponse"} <= listed and "AuditEvent" not in listed


@pytest.mark.parametrize(
    ("scope", "claims", "why"),
    [
        ("patient/*.cruds fhir-server/expunge", {"patient": "PATIENT"}, "acting for a patient or user"),
        ("user/*.cruds fhir-server/expunge", {"fhirUser": "Practitioner/p1"}, "acting for a patient or user"),
        ("system/*.cruds", {}, "fhir-server/expunge"),
        ("system/*.rs fhir-server/expunge", {}, "a system/ scope that deletes Patient"),
    ],
    ids=["patient-token", "user-token", "no-expunge-scope", "no-delete-scope"],
)
def test_only_a_backend_token_with_the_scopes_may_erase(server, admin, scope, claims, why):
    patient = _patient(admin)
    claims = {k: (patient if v == "PATIENT" else v) for k, v in claims.items()}
    with client_for(server, mint(server, scope, **claims)) as c:
        refused = c.post(f"/Patient/{patient}/$expunge", json=FORCE, headers=FHIR_JSON)
    assert_outcome(refused, 403, "forbidden")
    assert why in refused.text
    assert admin.get(f"/Patient/{patient}").status_code == 200  # nothing was touched
    server.app.state.audit.flush()
    trail = admin.get("/AuditEvent", params={"outcome": "4", "_count": "1000"}).json()
    reasons = [e["resource"].get("outcomeDesc", "") for e in trail.get("entry", [])]
    assert any(r.startswith("$expunge refused") and why in r for r in reasons)


def test_a_backend_services_client_registered_for_it_gets_the_scope_and_erases(server, admin):
    key = backend_key("RS384")
    client = register_client(server, kind="jwks", jwks=public_jwks(key), scope=ERASER_SCOPE)
    issued = backend_token(server, assertion(server, client.client_id, key, "RS384"), scope=ERASER_SCOPE)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"].split() == ERASER_SCOPE.split()
    observation = _observation(admin, _patient(admin))
    with client_for(server, issued.json()["access_token"]) as c:
        answer = c.post(f"/Observation/{observation}/$expunge", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert admin.get(f"/Observation/{observation}").status_code == 404


def test_an_app_acting_for_a_user_is_never_granted_it():
    wanted = ["launch", "user/*.rs", "patient/*.rs", "fhir-server/expunge"]
    assert "fhir-server/expunge" not in for_user_app(
        wanted, patient="p", encounter=None, ehr_launch=True, user_is_patient=False
    )
    assert for_backend(ERASER_SCOPE, ERASER_SCOPE) == ERASER_SCOPE.split()
    assert for_backend("fhir-server/expunge", "system/*.rs") == []  # only when registered for it


def test_one_resource_loses_its_history_alone(server, admin):
    patient = _patient(admin)
    observation = _observation(admin, patient, versions=3)
    other = _observation(admin, patient, versions=2)
    assert admin.get(f"/Observation/{observation}").status_code == 200  # a read, audited
    server.app.state.audit.flush()
    before = admin.get(f"/Patient/{patient}").json()
    answer = admin.post(f"/Observation/{observation}/$expunge", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    counts = {p["name"]: p.get("valueInteger", p.get("valueString")) for p in answer.json()["parameter"]}
    assert counts["count"] == 1 and counts["versions"] == 3 and counts["renamed"] >= 1
    assert admin.get(f"/Observation/{observation}").status_code == 404
    assert admin.get(f"/Observation/{observation}/_history").status_code == 404
    assert admin.get(f"/Observation/{observation}/_history/1").status_code == 404
    assert len(admin.get(f"/Observation/{other}/_history").json()["entry"]) == 2
    assert admin.get(f"/Patient/{patient}").json() == before
    found = admin.get("/Observation", params={"subject": f"Patient/{patient}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [other]
    trail = admin.get("/AuditEvent", params={"entity": counts["pseudonym"], "subtype": "read"}).json()
    assert trail.get("entry"), "the read of the erased resource is kept under its pseudonym"
    expunged = admin.get("/AuditEvent", params={"entity": counts["pseudonym"], "subtype": "expunge"}).json()
    (event,) = [e["resource"] for e in expunged["entry"]]
    assert {"reference": f"Patient/{patient}"} in [e["what"] for e in event["entity"]]  # whose it was: still here


def test_a_pending_write_back_refuses_unless_forced(server, admin):
    patient = _patient(admin)
    response = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://example.org/Questionnaire/unknown",
        "subject": {"reference": f"Patient/{patient}"},
    }
    response_id = created(admin.post("/QuestionnaireResponse", json=response, headers=FHIR_JSON))["id"]
    server.app.state.fhir.repo.write(lambda session: ehr_store.enqueue(session, 7, response_id, None))
    refused = admin.post(f"/Patient/{patient}/$expunge", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert_outcome(refused, 409, "conflict")
    assert "1 write-back deliveries" in refused.text
    assert admin.get(f"/QuestionnaireResponse/{response_id}").status_code == 200
    forced = admin.post(f"/Patient/{patient}/$expunge", json=FORCE, headers=FHIR_JSON)
    assert forced.status_code == 200, forced.text
    rows = next(p for p in forced.json()["parameter"] if p["name"] == "rows")
    assert {"name": "write-back-deliveries", "valueInteger": 1} in rows["part"]
    assert ehr_store.statuses_for_response(server.app.state.engine, response_id) == []


def test_a_patient_held_here_only_by_their_records_is_erased(server, admin):
    """The Patient may live only in the EHR that launched the app: its id names the records here all the same."""
    patient = f"ehr{uuid.uuid4().hex[:12]}"
    observation = _observation(admin, patient, versions=2)
    assert admin.get(f"/Observation/{observation}").status_code == 200  # a read naming the patient, audited
    answer = admin.post(f"/Patient/{patient}/$expunge", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    counts = {p["name"]: p.get("valueInteger", p.get("valueString")) for p in answer.json()["parameter"]}
    assert counts["resources"] == 1 and counts["versions"] == 2 and counts["pseudonym"].startswith("Patient/erased-")
    assert admin.get(f"/Observation/{observation}").status_code == 404
    assert not admin.get("/AuditEvent", params={"patient": patient}).json().get("entry")
    assert admin.get("/AuditEvent", params={"patient": counts["pseudonym"]}).json()["entry"]


def test_bad_requests_are_refused_clearly(admin):
    patient = _patient(admin)
    assert_outcome(admin.get(f"/Patient/{patient}/$expunge"), 405, "not-supported")
    bad = {"resourceType": "Parameters", "parameter": [{"name": "force", "valueString": "yes"}]}
    assert_outcome(admin.post(f"/Patient/{patient}/$expunge", json=bad, headers=FHIR_JSON), 400, "value")
    unknown = admin.post("/Patient/nobody-here/$expunge", json=FORCE, headers=FHIR_JSON)
    assert_outcome(unknown, 404, "not-found")
    audit = admin.post("/AuditEvent/x/$expunge", json=FORCE, headers=FHIR_JSON)
    assert_outcome(audit, 404, "not-supported")
    assert admin.get(f"/Patient/{patient}").status_code == 200


def test_switched_off_it_refuses_everyone(backend):
    with erasure_server(backend, load_library=False, expunge_enabled=False) as off, eraser(off) as c:
        patient = _patient(c)
        refused = c.post(f"/Patient/{patient}/$expunge", json=FORCE, headers=FHIR_JSON)
        assert_outcome(refused, 403, "forbidden")
        assert DISABLED in refused.text
        assert c.get(f"/Patient/{patient}").status_code == 200
        statement = c.get("/metadata").json()
        assert not [
            o for r in statement["rest"][0]["resource"] for o in r.get("operation", []) if o["name"] == "expunge"
        ]


def test_with_authorization_off_the_setting_alone_governs(backend):
    with erasure_server(backend, load_library=False, auth_required=False) as open_server:
        c = httpx.Client(base_url=open_server.fhir_base, timeout=30, headers={"Accept": "application/fhir+json"})
        with c:
            patient = _patient(c)
            answer = c.post(f"/Patient/{patient}/$expunge", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
            assert answer.status_code == 200, answer.text
            assert c.get(f"/Patient/{patient}").status_code == 404

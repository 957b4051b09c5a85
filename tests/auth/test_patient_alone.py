"""A patient-context token reaches only resources whose every patient reference names its patient (issue 15,
findings 1-4; docs/security.md "Access").  Each test here failed on the code before the policy's "every patient
reference" rule: a resource counted as A's when *any* compartment parameter named A."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.access_data import Records, admin, observation, returned_ids, seed, srs
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

WRITERS = ["launch/patient patient/*.cruds", "launch/patient patient/*.rs patient/QuestionnaireResponse.c"]
READER = "launch/patient patient/*.rs"


@pytest.fixture(scope="module")
def records(guarded: RunningServer) -> tuple[Records, Records]:
    return seed(guarded, uuid.uuid4().hex[:10])


def _active_flags(server: RunningServer, patient: str) -> set[str]:
    with admin(server) as c:
        found = c.get("/Flag", params={"subject": f"Patient/{patient}", "status": "active", "_count": "100"})
    assert found.status_code == 200, found.text
    return returned_ids(found.json())


def _by_a_about_b(a: Records, b: Records, marks: tuple[int, int, int, int] = (95, 95, 95, 95)) -> dict[str, Any]:
    """A high SRS about B, authored by A: in both compartments, A's alone in neither."""
    response = srs(b.patient, marks, "2026-11-22T10:00:00Z", uuid.uuid4().hex)
    return {**response, "author": {"reference": f"Patient/{a.patient}"}}


@pytest.mark.parametrize("scope", WRITERS, ids=["cruds", "app-scope"])
def test_a_response_about_another_patient_is_refused_and_changes_nothing(guarded, records, scope):
    a, b = records
    flags_before = _active_flags(guarded, b.patient)
    assert flags_before, "B's low SRS raised a Flag"
    with client_for(guarded, mint(guarded, scope, patient=a.patient)) as c:
        answer = c.post("/QuestionnaireResponse", json=_by_a_about_b(a, b))
    assert answer.status_code == 403, answer.text
    assert answer.json()["issue"][0]["code"] == "forbidden"
    assert _active_flags(guarded, b.patient) == flags_before  # B's Flags were not closed by a score written into B


def test_an_observation_about_another_patient_is_refused(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, WRITERS[0], patient=a.patient)) as c:
        answer = c.post("/Observation", json=observation(b.patient, performer=[{"reference": f"Patient/{a.patient}"}]))
        absolute = c.post(
            "/Observation",
            json=observation(a.patient, performer=[{"reference": f"https://ehr.example.org/fhir/Patient/{b.patient}"}]),
        )
    assert answer.status_code == 403, answer.text
    assert absolute.status_code == 403, absolute.text


def test_a_resource_naming_two_patients_is_read_by_neither_patient(guarded, records):
    a, b = records
    with admin(guarded) as c:
        shared = c.post("/Observation", json=observation(b.patient, performer=[{"reference": f"Patient/{a.patient}"}]))
    assert shared.status_code == 201, shared.text
    shared_id = shared.json()["id"]
    for patient in (a.patient, b.patient):
        with client_for(guarded, mint(guarded, READER, patient=patient)) as c:
            read = c.get(f"/Observation/{shared_id}")
            search = c.get("/Observation", params={"_count": "500"})
            history = c.get("/Observation/_history", params={"_count": "500"})
            everything = c.get(f"/Patient/{patient}/$everything", params={"_count": "500"})
        assert read.status_code == 404, read.text
        for bundle in (search, history, everything):
            assert bundle.status_code == 200, bundle.text
            assert shared_id not in returned_ids(bundle.json())
    with client_for(guarded, mint(guarded, READER, patient=a.patient)) as c:
        own = c.get("/Observation", params={"_count": "500"})
    assert a.ids["Observation"] <= returned_ids(own.json())  # A's own records are still all there


def test_extract_computes_nothing_from_another_patients_history(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, READER, patient=a.patient)) as c:
        answer = c.post("/QuestionnaireResponse/$extract", json=_by_a_about_b(a, b, (60, 60, 60, 60)))
        own = c.post(
            "/QuestionnaireResponse/$extract",
            json=srs(a.patient, (60, 60, 60, 60), "2026-11-22T10:00:00Z", uuid.uuid4().hex),
        )
    assert answer.status_code == 403, answer.text
    assert "last session" not in answer.text and b.patient not in answer.text
    assert own.status_code == 200, own.text  # the patient's own response is extracted as before


def test_an_audit_event_naming_several_patients_is_no_patients(guarded, records):
    """The patient picker's AuditEvent lists every patient it showed: none of them may read it."""
    a, b = records
    picker = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110112", "display": "Query"},
        "recorded": "2026-11-22T10:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "Patient picker of the authorization server"}}],
        "source": {"observer": {"display": "fhir-server"}},
        "entity": [{"what": {"reference": f"Patient/{p}"}} for p in (a.patient, b.patient)],
    }
    alone = {**picker, "entity": [{"what": {"reference": f"Patient/{a.patient}"}}]}
    with admin(guarded) as c:
        shared_id = c.post("/AuditEvent", json=picker).json()["id"]
        own_id = c.post("/AuditEvent", json=alone).json()["id"]
    with client_for(guarded, mint(guarded, READER, patient=a.patient)) as c:
        read = c.get(f"/AuditEvent/{shared_id}")
        answers = [
            c.get("/AuditEvent", params={"_count": "1000"}),
            c.get("/_history", params={"_count": "1000"}),
            c.get("/AuditEvent/_history", params={"_count": "1000"}),
            c.get("/Patient", params={"_id": a.patient, "_revinclude": "AuditEvent:patient", "_count": "1000"}),
            c.get(f"/Patient/{a.patient}/$everything", params={"_type": "AuditEvent", "_count": "1000"}),
        ]
        own = c.get(f"/AuditEvent/{own_id}")
    assert read.status_code == 404, read.text
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert shared_id not in returned_ids(answer.json())
    assert own.status_code == 200, own.text  # an AuditEvent about A alone is A's


def test_reusing_another_patients_identifier_reveals_nothing_and_loses_nothing(guarded, records):
    a, b = records
    b_response = b.one("QuestionnaireResponse")
    with admin(guarded) as c:
        b_identifier = c.get(f"/QuestionnaireResponse/{b_response}").json()["identifier"]["value"]
    with client_for(guarded, mint(guarded, WRITERS[0], patient=a.patient)) as c:
        reused = c.post(
            "/QuestionnaireResponse", json=srs(a.patient, (90, 90, 90, 90), "2026-11-22T10:00:00Z", b_identifier)
        )
    assert reused.status_code == 409, reused.text
    assert b_response not in reused.text and b.patient not in reused.text

    # A system token posting B's response with an identifier A already used: 409, never A's response as the answer
    identifier = uuid.uuid4().hex
    with admin(guarded) as c:
        first = c.post(
            "/QuestionnaireResponse", json=srs(a.patient, (90, 90, 90, 90), "2026-11-22T10:00:00Z", identifier)
        )
        replay = c.post(
            "/QuestionnaireResponse", json=srs(a.patient, (90, 90, 90, 90), "2026-11-22T10:00:00Z", identifier)
        )
        other = c.post(
            "/QuestionnaireResponse", json=srs(b.patient, (70, 70, 70, 70), "2026-11-22T10:05:00Z", identifier)
        )
    assert first.status_code == 201, first.text
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]  # a true replay: stored once
    assert other.status_code == 409, other.text
    assert first.json()["id"] not in other.text and a.patient not in other.text
    with admin(guarded) as c:
        stored = c.get("/QuestionnaireResponse", params={"identifier": f"urn:test:submission|{identifier}"}).json()
    assert returned_ids(stored) == {first.json()["id"]}


def test_conditional_create_criteria_stay_in_the_patients_compartment(guarded, records):
    """A's If-None-Exist that would match B's resource neither returns it nor collides with its claim."""
    a, b = records
    code = f"http://example.org/probe|{uuid.uuid4().hex}"
    system, value = code.split("|")
    with admin(guarded) as c:
        theirs = c.post(
            "/Observation",
            json=observation(b.patient, identifier=[{"system": system, "value": value}]),
            headers={"If-None-Exist": f"identifier={code}"},
        )
    assert theirs.status_code == 201, theirs.text
    with client_for(guarded, mint(guarded, WRITERS[0], patient=a.patient)) as c:
        mine = c.post(
            "/Observation",
            json=observation(a.patient, identifier=[{"system": system, "value": value}]),
            headers={"If-None-Exist": f"identifier={code}"},
        )
    assert mine.status_code == 201, mine.text
    assert mine.json()["id"] != theirs.json()["id"]

"""A response written back by another instance of this server arrives with its Observations and Flags (issue 17,
finding 6: the EHR that is itself a fhir-server scored it again — two Observations, four Flags, two Provenance
for one SRS).  The sender tags it ``scored-at-source``; the receiver does not score it again when the writer
speaks for the clinic (a Backend Services client, a practitioner), and scores it as usual when a client or their
family sends the tag (a client could otherwise keep their own answers from raising a Flag)."""

from __future__ import annotations

import uuid

import pytest

from fhir_server.canonical import SCORED_AT_SOURCE, WRITE_BACK_TAG
from tests.support.access_data import admin, srs
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

LOW = (80, 70, 85, 90)  # total 32.5: below the cutoff, two Flags
TAG = {"system": WRITE_BACK_TAG, "code": SCORED_AT_SOURCE}


def _patient(server: RunningServer) -> str:
    patient = f"p-{uuid.uuid4().hex[:10]}"
    with admin(server) as c:
        answer = c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
        assert answer.status_code == 201, answer.text
    return patient


def _derived(server: RunningServer, patient: str) -> dict[str, int]:
    with admin(server) as c:
        counts = {}
        for kind in ("Observation", "Flag"):
            found = c.get(f"/{kind}", params={"subject": f"Patient/{patient}", "_summary": "count"})
            counts[kind] = found.json()["total"]
    return counts


def _tagged(patient: str) -> dict:
    return {**srs(patient, LOW, "2026-11-20T16:45:00Z", uuid.uuid4().hex), "meta": {"tag": [TAG]}}


@pytest.mark.parametrize(
    "writer",
    [
        {"scope": "system/*.cruds"},
        {"scope": "launch patient/*.cruds", "fhirUser": "http://ehr.example/fhir/Practitioner/t1"},
    ],
    ids=["backend client", "practitioner"],
)
def test_a_response_scored_at_its_source_is_not_scored_again(guarded, writer):
    patient = _patient(guarded)
    claims = {"patient": patient} if "patient/" in writer["scope"] else {}
    token = mint(guarded, writer["scope"], **claims, **{k: v for k, v in writer.items() if k != "scope"})
    with client_for(guarded, token) as c:
        answer = c.post("/QuestionnaireResponse", json=_tagged(patient), headers={"Prefer": "return=OperationOutcome"})
    assert answer.status_code == 201, answer.text
    notes = [i.get("diagnostics", "") for i in answer.json()["issue"]]
    assert any("scored where it was collected" in n for n in notes), notes
    assert _derived(guarded, patient) == {"Observation": 0, "Flag": 0}


def test_a_client_cannot_keep_their_answers_from_being_scored(guarded):
    patient = _patient(guarded)
    token = mint(guarded, "launch/patient patient/*.cruds", patient=patient, fhirUser=f"Patient/{patient}")
    with client_for(guarded, token) as c:
        answer = c.post("/QuestionnaireResponse", json=_tagged(patient))
    assert answer.status_code == 201, answer.text
    derived = _derived(guarded, patient)
    assert derived["Observation"] >= 1 and derived["Flag"] == 2, derived


def test_without_the_tag_a_backend_clients_response_is_scored(guarded):
    patient = _patient(guarded)
    with admin(guarded) as c:
        answer = c.post("/QuestionnaireResponse", json=srs(patient, LOW, "2026-11-20T16:45:00Z", uuid.uuid4().hex))
    assert answer.status_code == 201, answer.text
    assert _derived(guarded, patient)["Flag"] == 2

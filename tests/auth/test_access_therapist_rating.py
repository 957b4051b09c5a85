"""The therapist's own rating of a session, its gap with the client's and the Flag it raises are the therapist's
(issue 21): a patient-context token for that very client reaches none of them — reads, versions, searches,
_revinclude, $everything — while it still reaches the client's own SRS; a site that allows it
(FHIR_SERVER_CLIENT_SEES_THERAPIST_RATING) shows them; a user token sees them either way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.scoring.test_concordance import therapist
from tests.scoring.test_pipeline import srs
from tests.support.access_data import admin
from tests.support.server import RunningServer
from tests.support.tokens import auth_server, client_for, mint

PATIENT_SCOPES = "launch/patient patient/*.rs"


@pytest.fixture(scope="module")
def open_site(database_url: str, backend: str) -> Iterator[RunningServer]:
    with auth_server(database_url, backend, client_sees_therapist_rating=True) as running:
        yield running


@pytest.fixture(scope="module")
def session(guarded: RunningServer) -> dict[str, set[str]]:
    """One session rated by both: the ids of the client's and of the therapist's resources."""
    patient = f"tr-{uuid.uuid4().hex[:10]}"
    with admin(guarded) as c:
        assert c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
        mine = c.post("/QuestionnaireResponse", json=srs(patient, (90, 60, 90, 90), "2026-11-02T10:50:00Z")).json()
        theirs = c.post("/QuestionnaireResponse", json=therapist(patient, (95, 95, 95, 95), "2026-11-02T10:55:00Z"))
        theirs = theirs.json()
        observations = c.get("/Observation", params={"subject": f"Patient/{patient}"}).json()["entry"]
        flags = c.get("/Flag", params={"patient": patient}).json()["entry"]
    by_code = {e["resource"]["code"]["coding"][0]["code"]: e["resource"]["id"] for e in observations + flags}
    assert {"srs-total", "tsrs-total", "srs-gap-total", "therapist-overestimated"} <= set(by_code)
    return {
        "patient": {patient},
        "client": {f"QuestionnaireResponse/{mine['id']}", f"Observation/{by_code['srs-total']}"},
        "therapist": {
            f"QuestionnaireResponse/{theirs['id']}",
            f"Observation/{by_code['tsrs-total']}",
            f"Observation/{by_code['srs-gap-total']}",
            f"Flag/{by_code['therapist-overestimated']}",
        },
    }


def _searched(client, patient: str) -> set[str]:  # type: ignore[no-untyped-def]
    found = set()
    for query in (
        f"/Observation?subject=Patient/{patient}",
        f"/QuestionnaireResponse?subject=Patient/{patient}",
        f"/Flag?patient={patient}",
        f"/Patient?_id={patient}&_revinclude=Observation:subject&_revinclude=Flag:patient",
        f"/Patient/{patient}/$everything",
    ):
        answer = client.get(query)
        assert answer.status_code == 200, (query, answer.text)
        found |= {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in answer.json().get("entry", [])}
    return found


def test_a_patient_token_reaches_none_of_the_therapists_resources(guarded, session):
    [patient] = session["patient"]
    with client_for(guarded, mint(guarded, PATIENT_SCOPES, patient=patient)) as c:
        for reference in session["therapist"]:
            assert c.get(f"/{reference}").status_code == 404, reference
            assert c.get(f"/{reference}/_history/1").status_code == 404, reference
        for reference in session["client"]:
            assert c.get(f"/{reference}").status_code == 200, reference
        found = _searched(c, patient)
    assert session["client"] <= found and not session["therapist"] & found


def test_a_site_that_allows_it_shows_them_to_the_client(open_site, session):
    [patient] = session["patient"]
    with client_for(open_site, mint(open_site, PATIENT_SCOPES, patient=patient)) as c:
        for reference in session["therapist"]:
            assert c.get(f"/{reference}").status_code == 200, reference
        assert session["therapist"] <= _searched(c, patient)


def test_a_clinicians_token_sees_them(guarded, session):
    [patient] = session["patient"]
    with client_for(guarded, mint(guarded, "openid fhirUser user/*.rs")) as c:
        assert session["therapist"] | session["client"] <= _searched(c, patient)

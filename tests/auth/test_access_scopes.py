"""Scope by interaction matrix (issue 6 point 3; SMART App Launch 2.x "Scopes and Launch Context"): v1 read/write,
v2 c r u d s and query-constrained scopes; malformed scopes grant nothing; a patient scope without a launch
patient grants nothing; 403 with ``insufficient_scope`` when no scope allows the interaction."""

from __future__ import annotations

import uuid

import pytest

from tests.support.access_data import Records, admin, observation, returned_ids, seed, srs
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint


@pytest.fixture(scope="module")
def records(guarded: RunningServer) -> tuple[Records, Records]:
    return seed(guarded, uuid.uuid4().hex[:10])


def _forbidden(answer) -> bool:
    return (
        answer.status_code == 403
        and answer.json()["issue"][0]["code"] == "forbidden"
        and "insufficient_scope" in answer.headers.get("www-authenticate", "")
    )


def test_create_only_token_submits_a_response_and_reads_nothing(guarded, records):
    a, _ = records
    token = mint(guarded, "launch/patient patient/QuestionnaireResponse.c", patient=a.patient)
    with client_for(guarded, token) as c:
        created = c.post(
            "/QuestionnaireResponse", json=srs(a.patient, (60, 60, 60, 60), "2026-11-21T09:00:00Z", uuid.uuid4().hex)
        )
        assert created.status_code == 201, created.text
        response_id = created.json()["id"]
        reads = [
            c.get(f"/QuestionnaireResponse/{response_id}"),
            c.get("/QuestionnaireResponse", params={"subject": f"Patient/{a.patient}"}),
            c.get(f"/Observation/{a.one('Observation')}"),
            c.get("/Observation"),
            c.get(f"/Patient/{a.patient}"),
            c.get("/Flag", params={"patient": a.patient}),
            c.get(f"/Patient/{a.patient}/$everything"),
            c.get(f"/Patient/{a.patient}/$alliance-summary"),
            c.get("/_history"),
        ]
    for answer in reads:
        assert answer.status_code in (403, 200), answer.text
        if answer.status_code == 200:  # only history answers, and it is empty for this grant
            assert not returned_ids(answer.json()), answer.text
        else:
            assert _forbidden(answer), answer.text
    with admin(guarded) as c:  # the server scored it all the same
        scored = c.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{response_id}"}).json()
    assert scored.get("entry"), "the submission was scored"


def test_query_constrained_scope(guarded, records):
    a, _ = records
    token = mint(guarded, "launch/patient patient/Observation.rs?category=survey", patient=a.patient)
    vitals = a.one("vital-signs")
    with client_for(guarded, token) as c:
        found = returned_ids(c.get("/Observation", params={"_count": "500"}).json())
        read_vitals = c.get(f"/Observation/{vitals}")
        read_survey = c.get(f"/Observation/{a.one('Observation')}")
        flags = c.get("/Flag")
    with admin(guarded) as c:
        everything_of_a = returned_ids(
            c.get("/Observation", params={"subject": f"Patient/{a.patient}", "_count": "500"}).json()
        )
    assert vitals not in found and found and found <= everything_of_a
    assert read_vitals.status_code == 404
    assert read_survey.status_code == 200
    assert _forbidden(flags)


def test_v1_read_is_not_write(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, "launch/patient patient/Observation.read", patient=a.patient)) as c:
        assert c.get(f"/Observation/{a.one('Observation')}").status_code == 200
        assert _forbidden(c.post("/Observation", json=observation(a.patient)))
        assert _forbidden(c.delete(f"/Observation/{a.one('Observation')}"))


def test_v1_write_is_not_read(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, "launch/patient patient/Observation.write", patient=a.patient)) as c:
        assert c.post("/Observation", json=observation(a.patient)).status_code == 201
        assert _forbidden(c.get(f"/Observation/{a.one('Observation')}"))


def test_v2_search_without_read(guarded, records):
    a, _ = records
    with client_for(guarded, mint(guarded, "launch/patient patient/Observation.s", patient=a.patient)) as c:
        assert c.get("/Observation").status_code == 200
        assert _forbidden(c.get(f"/Observation/{a.one('Observation')}"))


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rsx",  # not c r u d s
        "patient/Observation.sr",  # out of order
        "patient/Observation.read?category=survey",  # v1 takes no query
        "patient/NotAType.rs",
        "Observation.read",
        "patient/*.rs",  # well formed, but no launch patient in the token
    ],
)
def test_malformed_or_contextless_scopes_grant_nothing(guarded, records, scope):
    a, _ = records
    with client_for(guarded, mint(guarded, scope)) as c:
        assert _forbidden(c.get(f"/Observation/{a.one('Observation')}"))
        assert _forbidden(c.get("/Observation"))


def test_system_scope_reaches_everyone(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, "system/Observation.rs")) as c:
        found = returned_ids(c.get("/Observation", params={"_count": "1000"}).json())
        assert a.ids["Observation"] <= found or c.get(f"/Observation/{a.one('Observation')}").status_code == 200
        assert c.get(f"/Observation/{b.one('Observation')}").status_code == 200
        assert _forbidden(c.post("/Observation", json=observation(a.patient)))

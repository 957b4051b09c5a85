"""Writes under a patient-context token (issue 6 point 3, docs/security.md): a write must keep the resource in the
launch patient's compartment, checked on the old and the new version; another patient's resources cannot be
changed, deleted or matched by conditional criteria; every entry of a transaction is checked and a refused
entry leaves nothing behind."""

from __future__ import annotations

import uuid

import pytest

from tests.support.access_data import Records, admin, observation, returned_ids, seed, srs
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

WRITER = "launch/patient patient/*.cruds"


@pytest.fixture(scope="module")
def records(guarded: RunningServer) -> tuple[Records, Records]:
    return seed(guarded, uuid.uuid4().hex[:10])


def _version(server: RunningServer, resource_type: str, resource_id: str) -> str:
    with admin(server) as c:
        answer = c.get(f"/{resource_type}/{resource_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["versionId"]


def test_cannot_change_or_delete_another_patients_resource(guarded, records):
    a, b = records
    target = b.one("Observation")
    before = _version(guarded, "Observation", target)
    with client_for(guarded, mint(guarded, WRITER, patient=a.patient)) as c:
        put = c.put(f"/Observation/{target}", json={**observation(b.patient), "id": target})
        patch = c.patch(
            f"/Observation/{target}",
            json=[{"op": "replace", "path": "/status", "value": "amended"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        delete = c.delete(f"/Observation/{target}")
        conditional = c.delete("/Observation", params={"_id": target})
    assert put.status_code == 404, put.text
    assert patch.status_code == 404, patch.text
    assert delete.status_code == 200 and "already absent" in delete.text  # exactly as for a missing resource
    assert conditional.status_code == 200 and "nothing was deleted" in conditional.text
    assert _version(guarded, "Observation", target) == before


def test_cannot_write_into_or_move_to_another_patient(guarded, records):
    a, b = records
    with client_for(guarded, mint(guarded, WRITER, patient=a.patient)) as c:
        created = c.post("/Observation", json=observation(b.patient))
        mine = c.post("/Observation", json=observation(a.patient))
        assert mine.status_code == 201, mine.text
        own_id = mine.json()["id"]
        moved = c.put(f"/Observation/{own_id}", json={**observation(b.patient), "id": own_id})
        patched = c.patch(
            f"/Observation/{own_id}",
            json=[{"op": "replace", "path": "/subject/reference", "value": f"Patient/{b.patient}"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        response_for_b = c.post(
            "/QuestionnaireResponse", json=srs(b.patient, (90, 90, 90, 90), "2026-11-21T10:00:00Z", uuid.uuid4().hex)
        )
    for answer in (created, moved, patched, response_for_b):
        assert answer.status_code == 403, answer.text
        assert answer.json()["issue"][0]["code"] == "forbidden"
    assert _version(guarded, "Observation", own_id) == "1"
    with admin(guarded) as c:
        found = c.get("/Observation", params={"subject": f"Patient/{b.patient}", "_count": "200"}).json()
    assert returned_ids(found) == b.ids["Observation"]  # nothing new appeared in B's record


def test_conditional_criteria_see_only_the_patients_own_records(guarded, records):
    a, b = records
    b_response = b.one("QuestionnaireResponse")
    with admin(guarded) as c:
        identifier = c.get(f"/QuestionnaireResponse/{b_response}").json()["identifier"]
    replay = srs(a.patient, (90, 90, 90, 90), "2026-11-21T10:00:00Z", identifier["value"])
    with client_for(guarded, mint(guarded, WRITER, patient=a.patient)) as c:
        # B's submission identifier, replayed under A's token, must not hand back B's response
        answer = c.post("/QuestionnaireResponse", json=replay)
        update = c.put("/Observation", params={"_id": b.one("Observation")}, json=observation(a.patient))
    assert b_response not in returned_ids(answer.json())
    assert answer.status_code in (201, 409, 412), answer.text
    assert b.one("Observation") not in returned_ids(update.json())


def test_transaction_with_one_refused_entry_writes_nothing(guarded, records):
    a, b = records
    marker = uuid.uuid4().hex
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": observation(a.patient, note=[{"text": marker}]),
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": observation(b.patient, note=[{"text": marker}]),
            },
        ],
    }
    with client_for(guarded, mint(guarded, WRITER, patient=a.patient)) as c:
        answer = c.post("/", json=bundle)
    assert answer.status_code == 403, answer.text
    with admin(guarded) as c:
        for patient in (a.patient, b.patient):
            found = c.get("/Observation", params={"subject": f"Patient/{patient}", "_count": "500"}).json()
            assert marker not in str(found)


def test_batch_entries_are_checked_one_by_one(guarded, records):
    a, b = records
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "POST", "url": "Observation"}, "resource": observation(a.patient)},
            {"request": {"method": "POST", "url": "Observation"}, "resource": observation(b.patient)},
            {"request": {"method": "DELETE", "url": f"Flag/{b.one('Flag')}"}},
        ],
    }
    with client_for(guarded, mint(guarded, WRITER, patient=a.patient)) as c:
        answer = c.post("/", json=bundle)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403"), statuses
    assert _version(guarded, "Flag", b.one("Flag")) == "1"  # still there, unchanged

"""FHIR R4 §3.1.0.8 conditional create/update/delete and §3.1.0.7 patch (http.html#ccreate, #cond-update,
conditional delete under #delete, #patch).

The criteria are a search (``identifier=urn:test|<uid>``): no match, one match and several matches each have
their own answer.  Conditional create must hold under concurrency (docs/security.md: HAPI #3141, Microsoft #1382):
requests racing with the same criteria leave exactly one resource, and so do racing conditional updates that
create.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
SYSTEM = "urn:test"
RACERS = 10
ROUNDS = 5  # a race window that opens only sometimes still shows within a few rounds


def criteria(uid: str) -> str:
    return f"identifier={SYSTEM}|{uid}"


def patient(uid: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": uid}], **elements}


def create(client: httpx.Client, resource: dict[str, Any], if_none_exist: str | None = None) -> httpx.Response:
    headers = {**FHIR_JSON, **({"If-None-Exist": if_none_exist} if if_none_exist else {})}
    return client.post("/Patient", json=resource, headers=headers)


def existing(client: httpx.Client, uid: str) -> dict[str, Any]:
    answer = create(client, patient(uid))
    assert answer.status_code == 201, answer.text
    return answer.json()


def matches(client: httpx.Client, uid: str) -> list[dict[str, Any]]:
    found = client.get("/Patient", params={"identifier": f"{SYSTEM}|{uid}", "_total": "accurate"})
    assert found.status_code == 200, found.text
    bundle = found.json()
    resources = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert bundle["total"] == len(resources)
    return resources


def version_of(client: httpx.Client, resource_id: str) -> str:
    answer = client.get(f"/Patient/{resource_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["versionId"]


def outcome_code(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["code"]


def race(server_base: str, request: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    """RACERS clients send ``request`` at the same moment, each on its own connection."""
    barrier = threading.Barrier(RACERS)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server_base, timeout=60) as own:
            barrier.wait()
            return request(own)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


# -- conditional create (If-None-Exist) -------------------------------------------------------------------


def test_if_none_exist_without_a_match_creates(client, uid):
    answer = create(client, patient(uid), criteria(uid))
    assert answer.status_code == 201, answer.text
    assert f"/Patient/{answer.json()['id']}/_history/1" in answer.headers["Location"]
    assert [r["id"] for r in matches(client, uid)] == [answer.json()["id"]]


def test_if_none_exist_with_one_match_returns_it_and_creates_nothing(client, uid):
    old = existing(client, uid)
    answer = create(client, patient(uid, active=True), criteria(uid))
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == old["id"]
    assert "active" not in answer.json()
    assert [r["id"] for r in matches(client, uid)] == [old["id"]]
    assert version_of(client, old["id"]) == "1"


def test_if_none_exist_with_several_matches_is_412(client, uid):
    existing(client, uid)
    existing(client, uid)
    assert outcome_code(create(client, patient(uid), criteria(uid)), 412) == "multiple-matches"
    assert len(matches(client, uid)) == 2


def test_if_none_exist_with_an_unknown_parameter_is_400(client, uid):
    answer = create(client, patient(uid), f"{criteria(uid)}&no-such-parameter=1")
    assert outcome_code(answer, 400) in ("not-supported", "invalid", "value")
    assert matches(client, uid) == []


def test_a_claim_whose_resource_no_longer_matches_is_taken_over(client, uid):
    """The criteria's claim (the conditional-create key) stays with the first resource after it stops matching;
    the next conditional create finds no match, takes the claim over and is itself found afterwards."""
    first = create(client, patient(uid), if_none_exist=criteria(uid))
    assert first.status_code == 201, first.text
    moved = {**first.json(), "identifier": [{"system": SYSTEM, "value": f"{uid}-moved"}]}
    assert client.put(f"/Patient/{moved['id']}", json=moved, headers=FHIR_JSON).status_code == 200
    second = create(client, patient(uid), if_none_exist=criteria(uid))
    assert second.status_code == 201, second.text
    again = create(client, patient(uid), if_none_exist=criteria(uid))
    assert again.status_code == 200 and again.json()["id"] == second.json()["id"]
    assert [p["id"] for p in matches(client, uid)] == [second.json()["id"]]


def test_concurrent_conditional_creates_leave_exactly_one_resource(client, server, uid):
    """Each round: RACERS identical If-None-Exist creates at once.  Exactly one creates; the rest get it back."""
    for round_ in range(ROUNDS):
        value = f"{uid}-{round_}"
        answers = race(server.fhir_base, lambda own, v=value: create(own, patient(v), criteria(v)))
        assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers if a.status_code >= 300]
        assert [a.status_code for a in answers].count(201) == 1
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 1
        assert [r["id"] for r in matches(client, value)] == list(ids)


# -- conditional update (PUT Type?criteria) -----------------------------------------------------------------


def conditional_update(client: httpx.Client, uid: str, resource: dict[str, Any]) -> httpx.Response:
    return client.put("/Patient", params={"identifier": f"{SYSTEM}|{uid}"}, json=resource, headers=FHIR_JSON)


def test_conditional_update_without_a_match_creates(client, uid):
    answer = conditional_update(client, uid, patient(uid, active=True))
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["meta"]["versionId"], created["active"]) == ("1", True)
    assert [r["id"] for r in matches(client, uid)] == [created["id"]]


def test_conditional_update_with_one_match_updates_it(client, uid):
    old = existing(client, uid)
    answer = conditional_update(client, uid, patient(uid, active=True))
    assert answer.status_code == 200, answer.text
    updated = answer.json()
    assert (updated["id"], updated["meta"]["versionId"], updated["active"]) == (old["id"], "2", True)
    assert [r["id"] for r in matches(client, uid)] == [old["id"]]


def test_conditional_update_whose_body_names_another_id_is_400(client, uid):
    old = existing(client, uid)
    answer = conditional_update(client, uid, {**patient(uid, active=True), "id": f"other-{uid}"})
    assert outcome_code(answer, 400) == "invalid"
    assert version_of(client, old["id"]) == "1"
    assert client.get(f"/Patient/other-{uid}").status_code == 404


def test_conditional_update_with_several_matches_is_412(client, uid):
    first, second = existing(client, uid), existing(client, uid)
    assert outcome_code(conditional_update(client, uid, patient(uid, active=True)), 412) == "multiple-matches"
    assert (version_of(client, first["id"]), version_of(client, second["id"])) == ("1", "1")


def test_concurrent_conditional_updates_without_a_match_create_one_resource(client, server, uid):
    """With no match a conditional update creates; racing twins must not each create (docs/security.md, Integrity)."""
    answers = race(server.fhir_base, lambda own: conditional_update(own, uid, patient(uid)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers if a.status_code >= 300]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(matches(client, uid)) == 1


# -- conditional delete (DELETE Type?criteria) ------------------------------------------------------------------


def conditional_delete(client: httpx.Client, uid: str) -> httpx.Response:
    return client.delete("/Patient", params={"identifier": f"{SYSTEM}|{uid}"})


def test_conditional_delete_without_a_match_succeeds_and_deletes_nothing(client, uid):
    bystander = existing(client, f"{uid}-bystander")
    assert conditional_delete(client, uid).status_code in (200, 204)
    assert version_of(client, bystander["id"]) == "1"


def test_conditional_delete_with_one_match_deletes_it(client, uid):
    old = existing(client, uid)
    assert conditional_delete(client, uid).status_code in (200, 204)
    assert client.get(f"/Patient/{old['id']}").status_code == 410
    assert matches(client, uid) == []


def test_conditional_delete_with_several_matches_is_412_and_deletes_nothing(client, uid):
    first, second = existing(client, uid), existing(client, uid)
    assert outcome_code(conditional_delete(client, uid), 412) == "multiple-matches"
    assert (version_of(client, first["id"]), version_of(client, second["id"])) == ("1", "1")


# -- patch (JSON Patch), by id and conditional ------------------------------------------------------------------

ACTIVATE = [{"op": "add", "path": "/active", "value": True}]


def test_patch_by_id_applies_a_json_patch(client, uid):
    old = existing(client, uid)
    answer = client.patch(f"/Patient/{old['id']}", json=ACTIVATE, headers=JSON_PATCH)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["meta"]["versionId"], answer.json()["active"]) == ("2", True)


def test_conditional_patch_with_one_match_patches_it(client, uid):
    old = existing(client, uid)
    answer = client.patch("/Patient", params={"identifier": f"{SYSTEM}|{uid}"}, json=ACTIVATE, headers=JSON_PATCH)
    assert answer.status_code == 200, answer.text
    patched = answer.json()
    assert (patched["id"], patched["meta"]["versionId"], patched["active"]) == (old["id"], "2", True)
    assert patched["identifier"] == old["identifier"]


@pytest.mark.parametrize(("copies", "status"), [(0, 404), (2, 412)])
def test_conditional_patch_needs_exactly_one_match(client, uid, copies, status):
    olds = [existing(client, uid) for _ in range(copies)]
    answer = client.patch("/Patient", params={"identifier": f"{SYSTEM}|{uid}"}, json=ACTIVATE, headers=JSON_PATCH)
    outcome_code(answer, status)
    assert [version_of(client, o["id"]) for o in olds] == ["1"] * copies


def test_patch_with_a_stale_if_match_is_412(client, uid):
    old = existing(client, uid)
    assert client.patch(f"/Patient/{old['id']}", json=ACTIVATE, headers=JSON_PATCH).status_code == 200
    stale = {**JSON_PATCH, "If-Match": 'W/"1"'}
    deactivate = [{"op": "replace", "path": "/active", "value": False}]
    answer = client.patch(f"/Patient/{old['id']}", json=deactivate, headers=stale)
    assert outcome_code(answer, 412) == "conflict"
    assert version_of(client, old["id"]) == "2"

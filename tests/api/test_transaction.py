"""FHIR R4 §3.1.0.11 batch/transaction (http.html#transaction).

A transaction is all or nothing: entries run in the order DELETE, POST, PUT/PATCH, GET whatever their order in the
Bundle, ``urn:uuid:`` fullUrls and conditional references (``Patient?identifier=s|v``) are resolved, and the
transaction-response lists one entry per request entry, in request order.  A batch runs each entry on its own.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test"


def identifier(value: str) -> list[dict[str, str]]:
    return [{"system": SYSTEM, "value": value}]


def patient(uid: str, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": identifier(uid), **elements}


def observation(uid: str, subject: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": identifier(uid),
        "status": "final",
        "code": {"text": "Session Rating Scale total"},
        "subject": {"reference": subject},
        **elements,
    }


def entry(method: str, url: str, resource: Any = None, *, full_url: str | None = None, **request: str) -> dict:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


def send(client: httpx.Client, kind: str, *entries: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
    return client.post("", json=bundle, headers={**FHIR_JSON, **(headers or {})})


def transaction(client: httpx.Client, *entries: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    return send(client, "transaction", *entries, headers=headers)


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def by_identifier(value: str) -> str:
    """A conditional reference / search URL for the Patients carrying this test's identifier."""
    return f"Patient?identifier={SYSTEM}|{value}"


def responses(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [e["response"] for e in answer.json()["entry"]]


def error_issue(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    return answer.json()


def read(client: httpx.Client, reference: str) -> dict[str, Any]:
    answer = client.get(f"/{reference}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def count(client: httpx.Client, resource_type: str, value: str) -> int:
    found = client.get(f"/{resource_type}", params={"identifier": f"{SYSTEM}|{value}", "_total": "accurate"})
    assert found.status_code == 200, found.text
    return found.json()["total"]


def location_id(location: str, resource_type: str, version: int) -> str:
    match = re.fullmatch(rf"{resource_type}/([A-Za-z0-9\-.]{{1,64}})/_history/{version}", location)
    assert match, f"{location!r} is not {resource_type}/<id>/_history/{version}"
    return match.group(1)


def subject_of(client: httpx.Client, response: dict[str, Any]) -> str:
    """The subject reference of the Observation that a response entry says was created."""
    observation_id = location_id(response["location"], "Observation", 1)
    return read(client, f"Observation/{observation_id}")["subject"]["reference"]


def new_urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


# -- references ------------------------------------------------------------------------------------------


def test_urn_uuid_references_point_at_the_created_resources(client, uid):
    patient_urn = new_urn()
    answer = transaction(
        client,
        entry("POST", "Observation", observation(uid, patient_urn)),
        entry("POST", "Observation", observation(uid, patient_urn)),
        entry("POST", "Patient", patient(uid), full_url=patient_urn),
    )
    first, second, created = responses(answer)
    assert answer.json()["type"] == "transaction-response"
    patient_id = location_id(created["location"], "Patient", 1)
    assert [subject_of(client, first), subject_of(client, second)] == [f"Patient/{patient_id}"] * 2
    assert read(client, f"Patient/{patient_id}")["identifier"] == identifier(uid)


def test_conditional_reference_resolves_to_the_single_match(client, uid):
    existing = create(client, patient(uid))
    answer = transaction(client, entry("POST", "Observation", observation(uid, by_identifier(uid))))
    (created,) = responses(answer)
    assert subject_of(client, created) == f"Patient/{existing['id']}"


def test_conditional_reference_matching_nothing_fails_the_transaction(client, uid):
    answer = transaction(
        client,
        entry("POST", "Patient", patient(uid)),
        entry("POST", "Observation", observation(uid, by_identifier(f"{uid}-absent"))),
    )
    issue = error_issue(answer, 404)
    assert "Bundle.entry[1]" in issue["expression"]
    assert count(client, "Patient", uid) == 0
    assert count(client, "Observation", uid) == 0


def test_conditional_reference_matching_several_fails_the_transaction(client, uid):
    create(client, patient(uid))
    create(client, patient(uid))
    answer = transaction(client, entry("POST", "Observation", observation(uid, by_identifier(uid))))
    assert error_issue(answer, 412)["code"] == "multiple-matches"
    assert count(client, "Observation", uid) == 0


# -- processing order: DELETE, POST, PUT/PATCH, GET ------------------------------------------------------


def test_delete_runs_before_a_search_listed_earlier(client, uid):
    doomed = create(client, patient(uid))
    answer = transaction(client, entry("GET", by_identifier(uid)), entry("DELETE", ref(doomed)))
    searched, deleted = responses(answer)
    assert searched["status"] == "200 OK"
    assert answer.json()["entry"][0]["resource"]["total"] == 0
    assert deleted["status"] in ("200 OK", "204 No Content")
    assert client.get(f"/{ref(doomed)}").status_code == 410


def test_read_of_a_resource_deleted_in_the_same_transaction_fails_it_whole(client, uid):
    target = create(client, patient(uid))
    answer = transaction(client, entry("GET", ref(target)), entry("DELETE", ref(target)))
    issue = error_issue(answer, 410)
    assert "Bundle.entry[0]" in issue["expression"]
    assert read(client, ref(target))["meta"]["versionId"] == "1"


def test_delete_runs_before_post(client, uid):
    old = create(client, patient(uid))
    conditional_create = entry("POST", "Patient", patient(uid), ifNoneExist=by_identifier(uid).partition("?")[2])
    answer = transaction(client, conditional_create, entry("DELETE", by_identifier(uid)))
    created, _ = responses(answer)
    assert created["status"] == "201 Created"
    assert location_id(created["location"], "Patient", 1) != old["id"]
    assert client.get(f"/{ref(old)}").status_code == 410
    assert count(client, "Patient", uid) == 1


def test_post_runs_before_put(client, uid):
    observation_id = f"obs-{uid}"
    update_as_create = {**observation(uid, by_identifier(uid)), "id": observation_id}
    put_entry = entry("PUT", f"Observation/{observation_id}", update_as_create)
    answer = transaction(client, put_entry, entry("POST", "Patient", patient(uid)))
    put, post = responses(answer)
    assert put["status"] == "201 Created"
    patient_id = location_id(post["location"], "Patient", 1)
    assert read(client, f"Observation/{observation_id}")["subject"]["reference"] == f"Patient/{patient_id}"


def test_put_runs_before_a_read_listed_earlier(client, uid):
    target = create(client, patient(uid))
    answer = transaction(client, entry("GET", ref(target)), entry("PUT", ref(target), {**target, "active": True}))
    assert responses(answer)[0]["status"] == "200 OK"
    seen = answer.json()["entry"][0]["resource"]
    assert (seen["active"], seen["meta"]["versionId"]) == (True, "2")


# -- the transaction-response ------------------------------------------------------------------------------


def test_response_entries_follow_the_request_order_with_status_location_etag(client, uid):
    kept = create(client, patient(uid))
    doomed = create(client, patient(f"{uid}-doomed"))
    answer = transaction(
        client,
        entry("GET", by_identifier(uid)),
        entry("PUT", ref(kept), {**kept, "active": True}),
        entry("POST", "Observation", observation(uid, ref(kept))),
        entry("DELETE", ref(doomed)),
    )
    searched, updated, created, deleted = responses(answer)
    entries = answer.json()["entry"]
    assert searched["status"] == "200 OK"
    assert entries[0]["resource"]["type"] == "searchset"
    assert (updated["status"], updated["etag"]) == ("200 OK", 'W/"2"')
    assert updated["location"] == f"Patient/{kept['id']}/_history/2"
    assert (created["status"], created["etag"]) == ("201 Created", 'W/"1"')
    location_id(created["location"], "Observation", 1)
    assert deleted["status"] in ("200 OK", "204 No Content")
    for written, response in ((entries[1], updated), (entries[2], created)):
        assert datetime.fromisoformat(response["lastModified"]).tzinfo is not None
        assert response["lastModified"] == written["resource"]["meta"]["lastUpdated"]


@pytest.mark.parametrize(("prefer", "included"), [("return=representation", True), ("return=minimal", False)])
def test_prefer_return_decides_whether_response_entries_carry_resources(client, uid, prefer, included):
    answer = transaction(client, entry("POST", "Patient", patient(uid)), headers={"Prefer": prefer})
    (created,) = responses(answer)
    patient_id = location_id(created["location"], "Patient", 1)
    carried = answer.json()["entry"][0]
    assert ("resource" in carried) is included
    if included:
        assert carried["resource"]["id"] == patient_id
        assert carried["resource"]["identifier"] == identifier(uid)


# -- all or nothing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"status": "done"}, "code-invalid"), ({"colour": "red"}, "structure")],
    ids=["invalid-code", "unknown-element"],
)
def test_one_invalid_entry_rolls_back_every_entry(client, uid, fault, code):
    patient_urn = new_urn()
    answer = transaction(
        client,
        entry("POST", "Patient", patient(uid), full_url=patient_urn),
        entry("POST", "Observation", observation(uid, patient_urn)),
        entry("POST", "Observation", observation(uid, patient_urn, **fault)),
    )
    issue = error_issue(answer, 400)
    assert issue["code"] == code
    assert "Bundle.entry[2]" in issue["diagnostics"]
    assert "Bundle.entry[2]" in issue["expression"]
    assert count(client, "Patient", uid) == 0
    assert count(client, "Observation", uid) == 0


def test_stale_if_match_fails_with_412_and_rolls_back(client, uid):
    target = create(client, patient(f"{uid}-target"))
    assert client.put(f"/{ref(target)}", json={**target, "active": True}, headers=FHIR_JSON).status_code == 200
    stale = entry("PUT", ref(target), {**target, "active": False}, ifMatch='W/"1"')
    answer = transaction(client, entry("POST", "Patient", patient(uid)), stale)
    issue = error_issue(answer, 412)
    assert "Bundle.entry[1]" in issue["expression"]
    assert count(client, "Patient", uid) == 0
    current = read(client, ref(target))
    assert (current["meta"]["versionId"], current["active"]) == ("2", True)


def test_two_entries_on_the_same_resource_are_refused(client, uid):
    target = create(client, patient(uid))
    answer = transaction(client, entry("PUT", ref(target), {**target, "active": True}), entry("DELETE", ref(target)))
    assert "Bundle.entry[1]" in error_issue(answer, 400)["expression"]
    assert read(client, ref(target))["meta"]["versionId"] == "1"


def test_a_conditional_delete_resolving_to_a_put_target_is_refused(client, uid):
    """§3.1.0.11.2: identities may not overlap in steps 1-3, including resolved conditional identities."""
    target = create(client, patient(uid))
    put_entry = entry("PUT", ref(target), {**target, "active": True})
    answer = transaction(client, entry("DELETE", by_identifier(uid)), put_entry)
    error_issue(answer, 400)
    assert read(client, ref(target))["meta"]["versionId"] == "1"


# -- conditional create, patch and reads inside a transaction ----------------------------------------------


@pytest.mark.parametrize("patient_first", [True, False], ids=["patient-listed-first", "observation-listed-first"])
def test_conditional_create_that_matches_redirects_references_to_the_existing_resource(client, uid, patient_first):
    existing = create(client, patient(uid))
    patient_urn = new_urn()
    criteria = by_identifier(uid).partition("?")[2]
    conditional = entry("POST", "Patient", patient(uid), full_url=patient_urn, ifNoneExist=criteria)
    referring = entry("POST", "Observation", observation(uid, patient_urn))
    answer = transaction(client, *([conditional, referring] if patient_first else [referring, conditional]))
    matched, created = responses(answer) if patient_first else reversed(responses(answer))
    assert matched["status"] == "200 OK"
    assert matched["location"] == f"Patient/{existing['id']}/_history/1"
    assert subject_of(client, created) == f"Patient/{existing['id']}"
    assert count(client, "Patient", uid) == 1


@pytest.mark.parametrize("target", ["instance", "conditional"])
def test_patch_entry_applies_a_json_patch_carried_in_a_binary(client, uid, target):
    existing = create(client, patient(uid))
    url = ref(existing) if target == "instance" else by_identifier(uid)
    document = json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(document).decode(),
    }
    (patched,) = responses(transaction(client, entry("PATCH", url, binary)))
    assert patched["status"] == "200 OK"
    assert patched["location"] == f"Patient/{existing['id']}/_history/2"
    stored = read(client, ref(existing))
    assert (stored["active"], stored["meta"]["versionId"]) == (True, "2")


def test_get_entries_read_and_search(client, uid):
    existing = create(client, patient(uid))
    answer = transaction(client, entry("GET", ref(existing)), entry("GET", by_identifier(uid)))
    read_response, search_response = responses(answer)
    read_entry, search_entry = answer.json()["entry"]
    assert (read_response["status"], read_response["etag"]) == ("200 OK", 'W/"1"')
    assert read_entry["resource"]["id"] == existing["id"]
    assert search_response["status"] == "200 OK"
    searchset = search_entry["resource"]
    assert (searchset["type"], searchset["total"]) == ("searchset", 1)
    assert [e["resource"]["id"] for e in searchset["entry"]] == [existing["id"]]


def test_get_vread_entry_sees_a_version_written_earlier_in_the_transaction(client, uid):
    existing = create(client, patient(uid))
    vread = entry("GET", f"{ref(existing)}/_history/2")
    answer = transaction(client, vread, entry("PUT", ref(existing), {**existing, "active": True}))
    assert responses(answer)[0]["status"] == "200 OK"
    assert answer.json()["entry"][0]["resource"]["meta"]["versionId"] == "2"


# -- batch and malformed requests -----------------------------------------------------------------------


def test_batch_entries_succeed_or_fail_independently(client, uid):
    answer = send(
        client,
        "batch",
        entry("POST", "Patient", patient(uid)),
        entry("POST", "Observation", observation(uid, "Patient/unknown", status="done")),
        entry("POST", "Patient", patient(uid)),
    )
    first, failed, last = responses(answer)
    assert answer.json()["type"] == "batch-response"
    assert [r["status"].split()[0] for r in (first, failed, last)] == ["201", "400", "201"]
    assert failed["outcome"]["resourceType"] == "OperationOutcome"
    assert failed["outcome"]["issue"][0]["code"] == "code-invalid"
    assert count(client, "Patient", uid) == 2
    assert count(client, "Observation", uid) == 0


@pytest.mark.parametrize("kind", ["collection", "not-a-bundle"])
def test_only_batch_and_transaction_bundles_are_processed_at_the_base(client, uid, kind):
    body = (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": new_urn(), "resource": patient(uid)}]}
        if kind == "collection"
        else patient(uid)
    )
    answer = client.post("", json=body, headers=FHIR_JSON)
    assert error_issue(answer, 400)["severity"] == "error"
    assert count(client, "Patient", uid) == 0

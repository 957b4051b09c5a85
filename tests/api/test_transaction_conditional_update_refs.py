"""FHIR R4 §3.1.0.11.2 (http.html#trules): references to the fullUrl of a conditional update inside a transaction
resolve to the resource the update matched, or to the one it creates — even from POST entries, which the server
processes before PUTs.  EHR write-back relies on this: its Provenance (POST) names Flags it closes (PUT
``Flag?identifier=…``)."""

from __future__ import annotations

import uuid

from tests.api.test_transaction import entry, identifier, observation, patient, transaction


def _flag(uid: str, subject: str, status: str) -> dict:
    return {
        "resourceType": "Flag",
        "identifier": identifier(uid),
        "status": status,
        "code": {"text": "alliance concern"},
        "subject": {"reference": subject},
    }


def test_a_post_refers_to_a_conditional_update_that_matches_and_to_one_that_creates(client, uid):
    made = transaction(client, entry("POST", "Patient", patient(uid)))
    subject = made.json()["entry"][0]["response"]["location"].split("/_history")[0]
    existing = transaction(client, entry("POST", "Flag", _flag(f"{uid}-old", subject, "active")))
    old_id = existing.json()["entry"][0]["response"]["location"].split("/")[1]

    old_url, new_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    closing = f"Flag?identifier=urn:test|{uid}-old"
    answer = transaction(
        client,
        entry(
            "POST",
            "Observation",
            observation(uid, subject, focus=[{"reference": old_url}, {"reference": new_url}]),
        ),
        entry("PUT", closing, _flag(f"{uid}-old", subject, "inactive"), full_url=old_url),
        entry("PUT", f"Flag?identifier=urn:test|{uid}-new", _flag(f"{uid}-new", subject, "active"), full_url=new_url),
    )
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"].split("/_history")[0] for e in answer.json()["entry"]]
    observation_ref, old_ref, new_ref = locations
    assert old_ref == f"Flag/{old_id}"  # matched: updated in place
    stored = client.get(f"/{observation_ref}").json()
    assert [f["reference"] for f in stored["focus"]] == [old_ref, new_ref]
    assert client.get(f"/{old_ref}").json()["status"] == "inactive"
    assert client.get(f"/{new_ref}").json()["identifier"] == identifier(f"{uid}-new")


def test_a_conditional_update_whose_body_names_another_resource_is_refused_naming_the_entry(client, uid):
    made = transaction(client, entry("POST", "Patient", patient(uid)))
    subject = made.json()["entry"][0]["response"]["location"].split("/_history")[0]
    transaction(client, entry("POST", "Flag", _flag(uid, subject, "active")))
    wrong = {**_flag(uid, subject, "inactive"), "id": "not-the-match"}
    full_url = f"urn:uuid:{uuid.uuid4()}"
    answer = transaction(
        client,
        entry("POST", "Observation", observation(uid, subject, focus=[{"reference": full_url}])),
        entry("PUT", f"Flag?identifier=urn:test|{uid}", wrong, full_url=full_url),
    )
    assert answer.status_code == 400 and "Bundle.entry[1]" in answer.text and "not-the-match" in answer.text
    assert client.get("/Observation", params={"identifier": f"urn:test|{uid}"}).json().get("entry", []) == []

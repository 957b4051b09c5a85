"""FHIR R4 §3.1.0 RESTful API, instance level: create, read, vread, update, patch and delete, with the headers
§3.1.0.1 asks for (ETag, Last-Modified, Location, If-Match, If-None-Match, If-Modified-Since, Prefer)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from email.utils import parsedate_to_datetime

import orjson

from fhir_server.validation import validate_resource
from tests.api.fhir import FHIR_JSON, assert_outcome, patient, post, put

SERVER_FIELDS = {"resourceType", "id", "meta", "identifier", "name", "gender", "birthDate", "active", "text"}


def _create(client, uid, **extra):
    response = post(client, "/Patient", patient(uid, **extra))
    assert response.status_code == 201, response.text
    return response


def test_create_assigns_id_meta_and_location(client, uid, server):
    response = _create(client, uid, id="client-chosen")
    body = response.json()
    assert body["id"] != "client-chosen"  # create: the server assigns the id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("+00:00")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"{server.fhir_base}/Patient/{body['id']}/_history/1"
    # RFC 9110's IMF-fixdate (English names, GMT), the second of meta.lastUpdated
    last_modified = response.headers["last-modified"]
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", last_modified)
    updated = datetime.fromisoformat(body["meta"]["lastUpdated"]).replace(microsecond=0)
    assert parsedate_to_datetime(last_modified) == updated
    validate_resource(body)  # what the server returns is valid R4
    assert set(body) <= SERVER_FIELDS  # and carries no server-internal fields


def test_created_resources_get_time_ordered_ids(client, uid):
    """Version 7 UUIDs (fhir_server/ids.py): a resource created later has a larger id, and the id's time is the
    millisecond of its creation (its lastUpdated is taken in the same write, a moment later at most)."""
    bodies = [_create(client, uid).json() for _ in range(3)]
    ids = [body["id"] for body in bodies]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for body in bodies:
        made = uuid.UUID(body["id"])
        assert made.version == 7
        updated = datetime.fromisoformat(body["meta"]["lastUpdated"]).timestamp() * 1000
        assert 0 <= updated - (made.int >> 80) < 5_000


def test_read_returns_the_stored_json_as_received(client, uid):
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70.50, "unit": "kg"},
        "effectiveDateTime": "2026-01-02T10:00:00.000+01:00",
    }
    raw = orjson.dumps(observation).replace(b"70.5", b"70.50")
    created = client.post("/Observation", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201
    read = client.get(f"/Observation/{created.json()['id']}")
    assert b'"value":70.50' in read.content  # FHIR decimals keep their precision
    assert b'"effectiveDateTime":"2026-01-02T10:00:00.000+01:00"' in read.content  # datetimes are not rewritten
    assert read.headers["etag"] == 'W/"1"'


def test_read_unknown_is_404_and_content_negotiation(client, uid):
    assert_outcome(client.get(f"/Patient/{uid}"), 404, "not-found")
    pid = _create(client, uid).json()["id"]
    assert (
        client.get(f"/Patient/{pid}", headers={"Accept": "application/json"})
        .headers["content-type"]
        .startswith("application/json")
    )
    assert client.get(f"/Patient/{pid}", params={"_format": "json"}).status_code == 200
    pretty = client.get(f"/Patient/{pid}", params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "resourceType"')


def test_conditional_read_headers_give_304(client, uid):
    response = _create(client, uid)
    pid = response.json()["id"]
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    last_modified = response.headers["last-modified"]
    assert client.get(f"/Patient/{pid}", headers={"If-Modified-Since": last_modified}).status_code == 304
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(f"/Patient/{pid}", headers={"If-Modified-Since": earlier}).status_code == 200


def test_update_versions_and_vread(client, uid):
    pid = _create(client, uid).json()["id"]
    updated = put(client, f"/Patient/{pid}", {**patient(uid), "id": pid, "gender": "female"})
    assert updated.status_code == 200
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.json()["meta"]["versionId"] == "2"
    assert client.get(f"/Patient/{pid}/_history/1").json().get("gender") is None
    assert client.get(f"/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert_outcome(client.get(f"/Patient/{pid}/_history/3"), 404, "not-found")
    assert_outcome(client.get(f"/Patient/{pid}/_history/x"), 404, "not-found")


def test_update_as_create_with_client_id(client, uid, server):
    response = put(client, f"/Patient/{uid}", {**patient(uid), "id": uid})
    assert response.status_code == 201
    assert response.headers["location"] == f"{server.fhir_base}/Patient/{uid}/_history/1"
    assert client.get(f"/Patient/{uid}").json()["id"] == uid


def test_if_match_guards_updates(client, uid):
    pid = _create(client, uid).json()["id"]
    body = {**patient(uid), "id": pid, "active": True}
    assert_outcome(put(client, f"/Patient/{pid}", body, **{"If-Match": 'W/"7"'}), 412, "conflict")
    assert put(client, f"/Patient/{pid}", body, **{"If-Match": 'W/"1"'}).status_code == 200
    assert_outcome(put(client, f"/Patient/{pid}", body, **{"If-Match": 'W/"1"'}), 412, "conflict")
    assert_outcome(put(client, f"/Patient/{pid}", body, **{"If-Match": "garbage"}), 412, "conflict")
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_prefer_return(client, uid):
    minimal = post(client, "/Patient", patient(uid), Prefer="return=minimal")
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"] and minimal.headers["etag"] == 'W/"1"'
    outcome = post(client, "/Patient", patient(uid), Prefer="return=OperationOutcome")
    assert outcome.status_code == 201 and outcome.json()["resourceType"] == "OperationOutcome"
    representation = post(client, "/Patient", patient(uid), Prefer="return=representation")
    assert representation.json()["resourceType"] == "Patient"


def test_json_patch(client, uid):
    pid = _create(client, uid).json()["id"]
    ops = [{"op": "add", "path": "/active", "value": True}, {"op": "replace", "path": "/name/0/family", "value": "X"}]
    headers = {"Content-Type": "application/json-patch+json"}
    patched = client.patch(f"/Patient/{pid}", content=orjson.dumps(ops), headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["active"] is True and patched.json()["name"][0]["family"] == "X"
    assert patched.headers["etag"] == 'W/"2"'
    # a patch producing an invalid resource is refused, and nothing changes
    bad = client.patch(f"/Patient/{pid}", content=b'[{"op": "add", "path": "/gender", "value": "x"}]', headers=headers)
    assert_outcome(bad, 400, "code-invalid")
    failing_test = [{"op": "test", "path": "/active", "value": False}]
    assert_outcome(
        client.patch(f"/Patient/{pid}", content=orjson.dumps(failing_test), headers=headers), 422, "processing"
    )
    stale = client.patch(f"/Patient/{pid}", content=orjson.dumps(ops), headers={**headers, "If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "conflict")
    change_id = [{"op": "replace", "path": "/id", "value": "other"}]
    assert_outcome(client.patch(f"/Patient/{pid}", content=orjson.dumps(change_id), headers=headers), 400, "invalid")
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "2"
    assert_outcome(client.patch(f"/Patient/{uid}", content=orjson.dumps(ops), headers=headers), 404, "not-found")


def test_delete_is_soft_and_versioned(client, uid):
    pid = _create(client, uid).json()["id"]
    deleted = client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert_outcome(client.get(f"/Patient/{pid}"), 410, "deleted")
    assert client.get(f"/Patient/{pid}/_history/1").status_code == 200  # the old version is kept
    assert_outcome(client.get(f"/Patient/{pid}/_history/2"), 410, "deleted")
    assert client.delete(f"/Patient/{pid}").status_code == 200  # deleting again is harmless
    search = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_total": "accurate"}).json()
    assert search["total"] == 0
    # a deleted resource can be brought back by update; the version count carries on
    revived = put(client, f"/Patient/{pid}", {**patient(uid), "id": pid})
    assert revived.status_code == 201 and revived.json()["meta"]["versionId"] == "3"


def test_request_id_is_returned(client):
    response = client.get("/metadata", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len(client.get("/metadata").headers["x-request-id"]) == 32

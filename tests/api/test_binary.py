"""Binary on the REST API (R4 binary.html, "Serving Binary Resources using the RESTful API"): the content itself
unless FHIR is asked for, raw content stored by create and update, the Binary resource in FHIR JSON still stored as
any resource; raw content never runs in the server's origin (docs/security.md, "Binary content"); bad input is a
clear OperationOutcome (both databases)."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest

from tests.api.fhir import FHIR_JSON, assert_outcome, post, send_raw

SANDBOX = "sandbox; default-src 'none'"


def _raw(client: httpx.Client, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return client.post("/Binary", content=body, headers={"Content-Type": content_type, **headers})


def _get(client: httpx.Client, path: str, accept: str = "*/*", **params: str) -> httpx.Response:
    return client.get(path, params=params, headers={"Accept": accept})


def test_raw_content_is_stored_as_a_binary_and_served_as_itself(client):
    created = _raw(client, b"session notes\n", "text/plain; charset=utf-8", **{"X-Security-Context": "Patient/p-bin"})
    assert created.status_code == 201, created.text
    binary = created.json()
    assert binary["resourceType"] == "Binary"
    assert binary["contentType"] == "text/plain; charset=utf-8"
    assert binary["securityContext"] == {"reference": "Patient/p-bin"}
    assert base64.b64decode(binary["data"]) == b"session notes\n"
    assert created.headers["Location"].endswith(f"/Binary/{binary['id']}/_history/1")

    for accept in ("*/*", "text/plain", "application/pdf", ""):
        served = _get(client, f"/Binary/{binary['id']}", accept)
        assert served.status_code == 200, (accept, served.text)
        assert served.content == b"session notes\n"
        assert served.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Security-Policy"] == SANDBOX
        assert "Content-Disposition" not in served.headers  # plain text is shown, never run
        assert served.headers["X-Security-Context"] == "Patient/p-bin"
        assert served.headers["ETag"] == 'W/"1"' and served.headers["Last-Modified"]
    version = _get(client, f"/Binary/{binary['id']}/_history/1")
    assert version.status_code == 200 and version.content == b"session notes\n"
    unchanged = client.get(f"/Binary/{binary['id']}", headers={"Accept": "*/*", "If-None-Match": 'W/"1"'})
    assert unchanged.status_code == 304


@pytest.mark.parametrize(
    ("accept", "params"),
    [
        ("application/fhir+json", {}),
        ("application/json", {}),
        ("text/html,*/*;q=0.8", {"_format": "json"}),
        ("*/*", {"_format": "application/json"}),  # _format is always a FHIR format
    ],
)
def test_fhir_is_served_when_asked_for(client, accept, params):
    binary_id = _raw(client, b"\x89PNG\r\n", "image/png").json()["id"]
    served = _get(client, f"/Binary/{binary_id}", accept, **params)
    assert served.status_code == 200, served.text
    assert served.headers["Content-Type"].startswith(("application/fhir+json", "application/json"))
    assert served.json()["resourceType"] == "Binary" and served.json()["contentType"] == "image/png"


def test_fhir_xml_asked_for_is_406(client):
    binary_id = _raw(client, b"x", "text/plain").json()["id"]
    assert_outcome(_get(client, f"/Binary/{binary_id}", "application/fhir+xml"), 406, "not-supported")


def test_update_takes_raw_content_and_creates_at_a_new_id(client, uid):
    binary_id = _raw(client, b"first", "text/plain").json()["id"]
    updated = client.put(f"/Binary/{binary_id}", content=b"%PDF-1.7", headers={"Content-Type": "application/pdf"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    served = _get(client, f"/Binary/{binary_id}")
    assert served.content == b"%PDF-1.7" and served.headers["Content-Type"] == "application/pdf"
    assert served.headers["Content-Disposition"] == "attachment"
    assert _get(client, f"/Binary/{binary_id}/_history/1").content == b"first"
    stale = client.put(
        f"/Binary/{binary_id}", content=b"late", headers={"Content-Type": "text/plain", "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    fresh = client.put(f"/Binary/b-{uid}", content=b"new", headers={"Content-Type": "text/plain"})
    assert fresh.status_code == 201, fresh.text
    assert _get(client, f"/Binary/b-{uid}").content == b"new"


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/javascript", "text/plain X"],
)
def test_active_content_is_never_run_in_the_servers_origin(client, content_type):
    markup = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(document.domain)'/>"
    resource = {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(markup).decode()}
    binary_id = post(client, "/Binary", resource).json()["id"]
    served = _get(client, f"/Binary/{binary_id}", "text/html,application/xhtml+xml,*/*;q=0.8")  # a browser
    assert served.status_code == 200
    assert served.content == markup
    assert served.headers["Content-Disposition"] == "attachment"
    assert served.headers["Content-Security-Policy"] == SANDBOX
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    if " " in content_type:  # not a media type: never copied into a header
        assert served.headers["Content-Type"] == "application/octet-stream"


def test_a_stored_content_type_cannot_inject_a_header(client):
    resource = {"resourceType": "Binary", "contentType": "text/plain\nSet-Cookie: a=b", "data": "eA=="}
    stored = post(client, "/Binary", resource)
    if stored.status_code != 201:  # the validator may refuse it first; either way nothing is injected
        assert_outcome(stored, 400, "value")
        return
    served = _get(client, f"/Binary/{stored.json()['id']}")
    assert served.headers["Content-Type"] == "application/octet-stream"
    assert "set-cookie" not in served.headers


def test_a_binary_resource_in_json_is_still_a_resource(client):
    resource = {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="}
    for content_type in ("application/fhir+json", "application/json"):
        created = send_raw(client, "POST", "/Binary", orjson.dumps(resource), content_type)
        assert created.status_code == 201, created.text
        assert created.json()["data"] == "iVBORw0KGgo="
        served = _get(client, f"/Binary/{created.json()['id']}")
        assert served.content == base64.b64decode("iVBORw0KGgo=")
        assert served.headers["Content-Type"] == "image/png"
        assert "Content-Disposition" not in served.headers
    other_json = send_raw(client, "POST", "/Binary", b'{"total": 34.1}', "application/json")
    assert other_json.status_code == 201, other_json.text
    assert other_json.json()["contentType"] == "application/json"
    assert _get(client, f"/Binary/{other_json.json()['id']}").content == b'{"total": 34.1}'


def test_bad_binary_input_is_a_clear_outcome(client):
    assert_outcome(client.post("/Binary", content=b"x", headers={"Content-Type": ""}), 415, "not-supported")
    assert_outcome(_raw(client, b"x", "text plain"), 400, "value")
    assert_outcome(_raw(client, b"", "text/plain"), 400, "required")
    bad_context = assert_outcome(_raw(client, b"x", "text/plain", **{"X-Security-Context": "not a ref"}), 400, "value")
    assert bad_context["issue"][0]["expression"] == ["Binary.securityContext.reference"]
    garbage = {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD!!!!"}
    assert assert_outcome(post(client, "/Binary", garbage), 400, "value")["issue"][0]["expression"] == ["Binary.data"]
    assert_outcome(post(client, "/Binary", {"resourceType": "Patient"}), 400, "invalid")
    assert_outcome(_raw(client, b"<Binary/>", "application/fhir+xml"), 415, "not-supported")


def test_raw_content_over_the_body_limit_is_413(client, server):
    limit = server.settings.max_body_bytes
    assert_outcome(_raw(client, b"x" * (limit + 1), "application/octet-stream"), 413, "too-long")
    put = client.put("/Binary/too-big", content=b"x" * (limit + 1), headers={"Content-Type": "image/png"})
    assert_outcome(put, 413, "too-long")


def test_binary_in_a_bundle_is_always_the_resource(client):
    binary_id = _raw(client, b"hello", "text/plain").json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Binary/{binary_id}"}}],
    }
    answer = client.post("", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["entry"][0]["resource"]["data"] == base64.b64encode(b"hello").decode()

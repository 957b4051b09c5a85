"""docs/security.md bad-input table and FHIR R4 §3.1.0.1.9 (error handling): every bad request is answered with an
OperationOutcome carrying the right issue code, never a 500 and never a stack trace, and nothing is stored."""

from __future__ import annotations

import pytest

from tests.api.fhir import assert_outcome, patient, post, put, send_raw


def _count(client, uid: str) -> int:
    return client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_total": "accurate"}).json()["total"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "structure"),
        (b'{"resourceType": "Patient", "gender": "male"', "structure"),
        (b"[]", "structure"),
        (b'"just a string"', "structure"),
        (b'{"gender": "male"}', "structure"),  # no resourceType
        (b"\xff\xfe{}", "structure"),  # invalid UTF-8
        (b'{"resourceType": "Patient", "gender": "male", "gender": "female"}', "structure"),  # duplicate keys
        (b'{"resourceType": "Patient", "multipleBirthInteger": NaN}', "value"),
        (b'{"resourceType": "Patient", "multipleBirthInteger": Infinity}', "value"),
        (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueDecimal": 1e400}', "value"),
        (b'{"resourceType": "Patient", "multipleBirthInteger": 2147483648}', "value"),
        (b'{"resourceType": "Patient", "multipleBirthInteger": ' + b"9" * 5000 + b"}", "value"),
        (b'{"resourceType": "Patient", "name": [{"family": "a\\ud800b"}]}', "value"),  # lone surrogate
        (b'{"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}', "value"),  # NUL (JSONB rejects it)
        (b'{"resourceType": "Patient", "name": [{"family": "a\\u0007b"}]}', "value"),  # control character
        (b'{"resourceType": "Patient", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "structure"),  # nesting
        (b'{"resourceType": "Patient", "favouriteColour": "blue"}', "structure"),  # unknown element
        (b'{"resourceType": "Patient", "gender": null}', "structure"),
        (b'{"resourceType": "Observation", "code": {"text": "x"}}', "required"),  # missing status
        (b'{"resourceType": "Observation", "status": "done", "code": {"text": "x"}}', "code-invalid"),
        (b'{"resourceType": "Patient", "gender": "banana"}', "code-invalid"),
        (b'{"resourceType": "Patient", "contact": [{"gender": "banana"}]}', "code-invalid"),
        (b'{"resourceType": "Patient", "birthDate": "2020-13-45"}', "value"),
        (b'{"resourceType": "Patient", "name": [{"family": 42}]}', "value"),
    ],
)
def test_bad_bodies_are_refused_with_the_right_code(client, body, code):
    assert_outcome(
        send_raw(client, "POST", "/Patient" if b'"Observation"' not in body else "/Observation", body), 400, code
    )


def test_invalid_resource_names_the_element(client):
    outcome = assert_outcome(
        post(client, "/Observation", {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}),
        400,
        "code-invalid",
    )
    assert outcome["issue"][0]["expression"] == ["Observation.status"]
    outcome = assert_outcome(
        post(client, "/Patient", {"resourceType": "Patient", "name": [{"family": 1}]}), 400, "value"
    )
    assert outcome["issue"][0]["expression"] == ["Patient.name[0].family"]


def test_unknown_resource_type_in_url_is_404_not_supported(client):
    assert_outcome(client.get("/Frobnicator/1"), 404, "not-supported")
    assert_outcome(client.get("/Frobnicator"), 404, "not-supported")
    assert_outcome(post(client, "/Frobnicator", {"resourceType": "Frobnicator"}), 404, "not-supported")


def test_body_type_differs_from_url(client, uid):
    assert_outcome(post(client, "/Observation", patient(uid)), 400, "invalid")
    assert _count(client, uid) == 0


def test_put_id_mismatch_and_missing_id(client, uid):
    assert_outcome(put(client, f"/Patient/{uid}", {**patient(uid), "id": "other"}), 400, "invalid")
    assert_outcome(put(client, f"/Patient/{uid}", patient(uid)), 400, "required")
    assert client.get(f"/Patient/{uid}").status_code == 404


@pytest.mark.parametrize("bad_id", ["a" * 65, "has space", "semi;colon", "under_score", "%27%20OR%201%3D1"])
def test_ids_outside_the_r4_syntax(client, bad_id):
    assert_outcome(client.get(f"/Patient/{bad_id}"), 400, "value")
    assert_outcome(put(client, f"/Patient/{bad_id}", {"resourceType": "Patient", "id": bad_id}), 400, "value")


def test_body_over_the_limit_is_413_before_parsing(client, server):
    limit = server.settings.max_body_bytes
    body = b'{"resourceType": "Patient", "name": [{"family": "' + b"x" * (limit + 10) + b'"}]}'
    assert_outcome(send_raw(client, "POST", "/Patient", body), 413, "too-long")


def test_body_over_the_limit_without_content_length_is_413(client, server):
    limit = server.settings.max_body_bytes

    def chunks():
        yield b'{"resourceType": "Patient", "name": [{"family": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    response = client.post("/Patient", content=chunks(), headers={"Content-Type": "application/fhir+json"})
    assert_outcome(response, 413, "too-long")


def test_wrong_content_type_is_415(client, uid):
    assert_outcome(send_raw(client, "POST", "/Patient", b"<Patient/>", "application/fhir+xml"), 415, "not-supported")
    assert_outcome(send_raw(client, "POST", "/Patient", b"{}", "text/plain"), 415, "not-supported")
    assert_outcome(send_raw(client, "PATCH", f"/Patient/{uid}", b"[]", "application/fhir+json"), 415, "not-supported")


def test_xml_and_other_formats_are_406(client):
    assert_outcome(client.get("/metadata", headers={"Accept": "application/fhir+xml"}), 406, "not-supported")
    assert_outcome(client.get("/metadata", params={"_format": "xml"}), 406, "not-supported")
    assert_outcome(client.get("/metadata", headers={"Accept": "text/turtle"}), 406, "not-supported")


def test_wrong_method_is_405(client):
    assert_outcome(client.post("/Patient/123/_history/1", content=b"{}"), 405, "not-supported")
    assert_outcome(client.delete("/Patient/123/_history/1"), 405, "not-supported")


def test_unknown_route_is_404_outcome(client, server):
    import httpx

    response = httpx.get(f"{server.root}/nothing-here")
    assert_outcome(response, 404, "not-found")


def test_injection_strings_are_literal_values(client, uid):
    post(client, "/Patient", patient(uid))
    for value in ["' OR '1'='1", "x; DROP TABLE resources; --", "%", "_", "\\"]:
        bundle = client.get("/Patient", params={"family": value, "identifier": f"urn:test|{uid}"}).json()
        assert bundle.get("entry", []) == []
    assert _count(client, uid) == 1


def test_malformed_search_values_are_400_naming_the_parameter(client):
    outcome = assert_outcome(client.get("/Patient", params={"birthdate": "not-a-date"}), 400, "value")
    assert "birthdate" in outcome["issue"][0]["diagnostics"]
    assert_outcome(client.get("/Patient", params={"_count": "-1"}), 400, "value")
    assert_outcome(client.get("/Patient", params={"_lastUpdated": "gt2026-99"}), 400, "value")


def test_unknown_search_parameter_is_reported_or_strictly_refused(client):
    lenient = client.get("/Patient", params={"shoe-size": "42", "_count": "1"})
    assert lenient.status_code == 200
    outcomes = [e for e in lenient.json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and "shoe-size" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get("/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400, "not-supported")

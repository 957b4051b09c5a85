"""The authorization server's own access to people and patient data leaves AuditEvents (docs/security.md, HIPAA
§164.312(b)): sign-ins that succeed and fail (DICOM 110122 Login), and every patient list the patient picker shows
(a search of patient data: who browsed, for which app, with what query, and each patient listed)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fhir_server.validation import validate_resource
from tests.auth.smart_support import Browser, create_patient, pkce, register_client, register_user, smart_server
from tests.support.server import RunningServer
from tests.support.tokens import mint


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend) as running:
        yield running


@pytest.fixture
def browser(server: RunningServer) -> Iterator[Browser]:
    b = Browser(server)
    yield b
    b.close()


def events(server: RunningServer, wanted: Callable[[dict[str, Any]], bool], **params: str) -> list[dict[str, Any]]:
    """AuditEvents matching ``params`` and ``wanted``, waiting for the background audit writer (200 ms flushes);
    newest first, as the shared database holds every other test's denials too."""
    token = mint(server, "system/AuditEvent.rs")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(
            f"{server.fhir_base}/AuditEvent", params={"_count": "200", "_sort": "-date", **params}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        found = [e["resource"] for e in answer.json().get("entry", []) if wanted(e["resource"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def entities(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


def queries(event: dict[str, Any]) -> list[str]:
    return [base64.b64decode(e["query"]).decode() for e in event.get("entity", []) if "query" in e]


def test_the_patient_picker_listing_is_audited_with_the_user_and_every_patient_listed(server, browser):
    family = f"Picker{uuid.uuid4().hex[:8]}"
    listed = {create_patient(server, family), create_patient(server, family)}
    client = register_client(server)
    fhir_user = f"Practitioner/picker-{uuid.uuid4().hex[:8]}"
    username = register_user(server, fhir_user, may_pick_patient=True)
    first = browser.authorize(client.client_id, pkce()[1])
    assert first.headers["location"] == "/auth/login"
    assert browser.sign_in(username).headers["location"] == "/auth/patient"

    page = browser.http.get("/auth/patient", params={"name": family})
    assert page.status_code == 200 and all(p in page.text for p in listed)

    found = events(server, lambda e: e["subtype"][0]["code"] == "search-type", agent=fhir_user)
    assert len(found) == 1, found
    event = found[0]
    assert event["action"] == "E" and event["outcome"] == "0"
    assert event["agent"][0]["who"]["reference"] == fhir_user and event["agent"][0]["altId"] == client.client_id
    assert entities(event) == {f"Patient/{p}" for p in listed}
    assert queries(event) == [f"name={family}"]
    assert "Patient picker" in event["outcomeDesc"]
    validate_resource(event, "AuditEvent")
    for patient in listed:  # found from the patient's side too, as any access to their record is
        assert events(server, lambda e, ev=event: e["id"] == ev["id"], patient=patient)


def test_sign_ins_are_audited_both_the_success_and_the_failure(server, browser):
    fhir_user = f"Practitioner/signer-{uuid.uuid4().hex[:8]}"
    username = register_user(server, fhir_user)
    assert browser.sign_in(username, "wrong password").status_code == 401
    assert browser.sign_in(username).status_code == 200

    signed_in = events(server, lambda e: e["subtype"][0]["code"] == "110122", agent=fhir_user)
    assert len(signed_in) == 1 and signed_in[0]["outcome"] == "0"
    assert signed_in[0]["outcomeDesc"] == "Signed in (password)"
    assert signed_in[0]["agent"][0]["network"]["address"] == "127.0.0.1"
    validate_resource(signed_in[0], "AuditEvent")

    refused = events(server, lambda e: username in e.get("outcomeDesc", ""), outcome="4")
    assert len(refused) == 1 and refused[0]["subtype"][0]["code"] == "110122"
    assert refused[0]["agent"][0]["who"]["display"] == "unauthenticated"
    validate_resource(refused[0], "AuditEvent")

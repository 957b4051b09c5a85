"""SMART App Launch 2, EHR launch: POST /auth/launch records the context (patient, encounter, fhirContext, user,
need_patient_banner, and a CDS card link's appContext) and returns an opaque ``launch``; /auth/authorize with that
launch issues a code whose token response carries the context.  Creating a launch needs a signed-in session with
its CSRF token or a bearer token that reads Patients in user/ or system/ context; a launch naming a user can be
completed only by that user."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.auth.smart_support import (
    Browser,
    create_patient,
    csrf_of,
    pkce,
    query_of,
    redeem,
    register_client,
    register_user,
    smart_server,
    token_request,
)
from tests.support.server import RunningServer
from tests.support.tokens import mint

EHR_SCOPE = "openid fhirUser launch patient/*.rs user/*.rs"


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend) as running:
        yield running


@pytest.fixture
def browser(server: RunningServer) -> Iterator[Browser]:
    b = Browser(server)
    yield b
    b.close()


def create_encounter(server: RunningServer, patient: str) -> str:
    body = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"}}
    body["subject"] = {"reference": f"Patient/{patient}"}
    headers = {"Authorization": f"Bearer {mint(server, 'system/*.cruds')}", "Content-Type": "application/fhir+json"}
    response = httpx.post(f"{server.fhir_base}/Encounter", json=body, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post_launch(server: RunningServer, body: dict, token: str | None = None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.root}/auth/launch", json=body, headers=headers, timeout=30)


def test_ehr_launch_carries_patient_encounter_and_fhir_context(server, browser):
    client = register_client(server, scope=EHR_SCOPE)
    username = register_user(server)
    patient = create_patient(server, "Launched")
    encounter = create_encounter(server, patient)
    context = [{"reference": f"Encounter/{encounter}"}]
    body = {"patient": patient, "encounter": encounter, "fhirContext": context, "user": username}
    created = post_launch(server, body, mint(server, "user/Patient.rs"))
    assert created.status_code == 201, created.text
    launch = created.json()["launch"]
    assert launch and created.json()["expires_in"] > 0

    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge, launch=launch, scope=EHR_SCOPE)
    token = redeem(server, client.client_id, code, verifier).json()
    assert token["patient"] == patient and token["encounter"] == encounter
    assert token["fhirContext"] == context
    assert token["need_patient_banner"] is False  # the EHR shows its own banner
    assert set(token["scope"].split()) == set(EHR_SCOPE.split())


def test_launch_created_from_a_signed_in_session_needs_the_csrf_token(server, browser):
    username = register_user(server)
    patient = create_patient(server, "Session")
    browser.sign_in(username)
    csrf = csrf_of(browser.http.get("/auth/login").text)
    without = browser.http.post("/auth/launch", json={"patient": patient})
    assert without.status_code == 403 and without.json()["error"] == "invalid_request"
    created = browser.http.post("/auth/launch", json={"patient": patient}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201, created.text

    client = register_client(server, scope=EHR_SCOPE)
    verifier, challenge = pkce()
    response = browser.authorize(client.client_id, challenge, launch=created.json()["launch"], scope=EHR_SCOPE)
    assert response.status_code == 302  # already signed in: straight back to the app
    token = redeem(server, client.client_id, query_of(response.headers["location"])["code"], verifier).json()
    assert token["patient"] == patient


def test_launch_for_another_user_is_denied(server, browser):
    client = register_client(server, scope=EHR_SCOPE)
    intended, other = register_user(server), register_user(server)
    patient = create_patient(server, "Intended")
    launch = post_launch(server, {"patient": patient, "user": intended}, mint(server, "system/*.rs")).json()["launch"]
    first = browser.authorize(client.client_id, pkce()[1], launch=launch, scope=EHR_SCOPE, state="s-other")
    assert first.status_code == 302
    denied = browser.sign_in(other)
    params = query_of(denied.headers["location"])
    assert params["error"] == "access_denied" and params["state"] == "s-other"


@pytest.mark.parametrize(
    ("token_scope", "status", "error"),
    [
        (None, 401, "invalid_token"),
        ("patient/*.rs", 403, "insufficient_scope"),
        ("user/Observation.rs", 403, "insufficient_scope"),
    ],
)
def test_creating_a_launch_needs_a_user_or_system_token(server, token_scope, status, error):
    patient = create_patient(server, "Guarded")
    token = mint(server, token_scope, patient=patient) if token_scope else None
    response = post_launch(server, {"patient": patient}, token)
    assert response.status_code == status and response.json()["error"] == error
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_forged_bearer_token_cannot_create_a_launch(server):
    response = post_launch(server, {}, "not.a-token.at-all")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "body",
    [
        {"patient": "does-not-exist"},
        {"patient": 5},
        {"encounter": "nope"},
        {"fhirContext": [{"reference": "Observation/missing"}]},
        {"fhirContext": "Encounter/1"},
        {"user": "nobody-by-that-name"},
        {"need_patient_banner": "yes"},
        {"colour": "blue"},
        [],
        {"appContext": {"view": "form"}},  # a string (CDS Hooks 2.0): JSON goes in as text
        {"appContext": 5},
        {"appContext": "x" * 4097},
        {"appContext": "é" * 2049},  # 4,098 bytes in UTF-8: the limit counts bytes
        {"appContext": "a\u0000b"},
    ],
)
def test_launch_context_is_validated(server, body):
    response = post_launch(server, body, mint(server, "system/*.rs"))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_launch_body_must_be_json(server):
    headers = {"Authorization": f"Bearer {mint(server, 'system/*.rs')}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.root}/auth/launch", content=b"{not json", headers=headers, timeout=30)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    form = httpx.post(f"{server.root}/auth/launch", data={"patient": "x"}, headers={"Authorization": "Bearer x"})
    assert form.status_code == 400


def test_launch_without_the_launch_scope_keeps_the_context_but_not_the_scope(server, browser):
    client = register_client(server, scope=EHR_SCOPE)
    username = register_user(server)
    patient = create_patient(server, "NoScope")
    launch = post_launch(server, {"patient": patient}, mint(server, "system/*.rs")).json()["launch"]
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge, launch=launch, scope="openid patient/*.rs")
    token = redeem(server, client.client_id, code, verifier).json()
    assert token["patient"] == patient and token["scope"] == "openid patient/*.rs"


def test_app_context_is_returned_with_the_token_and_on_refresh(server, browser):
    """CDS Hooks 2.0: the EHR passes a card link's appContext to the app in the token response, as is."""
    scope = f"{EHR_SCOPE} online_access"
    client = register_client(server, scope=scope)
    username = register_user(server)
    patient = create_patient(server, "CardLaunch")
    app_context = '{"view":"clinician","flag":"Flag/f-1"}'
    created = post_launch(server, {"patient": patient, "appContext": app_context}, mint(server, "system/*.rs"))
    assert created.status_code == 201, created.text
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge, launch=created.json()["launch"], scope=scope)
    token = redeem(server, client.client_id, code, verifier).json()
    assert token["appContext"] == app_context and token["patient"] == patient
    refreshed = token_request(
        server, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": client.client_id}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["appContext"] == app_context  # the grant's context travels with it


def test_app_context_of_4_kb_is_kept_and_none_is_not_invented(server, browser):
    client = register_client(server, scope=EHR_SCOPE)
    username = register_user(server)
    patient = create_patient(server, "LongCard")
    longest = "é" * 2048  # exactly 4,096 bytes
    system = mint(server, "system/*.rs")
    with_context = post_launch(server, {"patient": patient, "appContext": longest}, system).json()["launch"]
    without = post_launch(server, {"patient": patient}, system).json()["launch"]
    tokens = []
    for launch in (with_context, without):
        verifier, challenge = pkce()
        code, _ = browser.code_for(client.client_id, username, challenge, launch=launch, scope=EHR_SCOPE)
        tokens.append(redeem(server, client.client_id, code, verifier).json())
        browser.http.cookies.clear()  # the next launch signs in afresh
    assert tokens[0]["appContext"] == longest
    assert "appContext" not in tokens[1]

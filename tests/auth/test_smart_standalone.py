"""SMART App Launch 2, standalone launch with the authorization code grant (RFC 6749 §4.1) and PKCE (RFC 7636):
sign-in with CSRF, the patient picker, the token response, the id_token (OpenID Connect Core §2 with SMART's
fhirUser) verified against /auth/jwks, and the refusals docs/security.md asks for: PKCE missing, plain or wrong, a
redirect URI that is not registered exactly, a reused code (which revokes what it issued)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.auth.smart_support import (
    PASSWORD,
    REDIRECT,
    Browser,
    create_patient,
    introspect,
    pkce,
    query_of,
    redeem,
    register_client,
    register_user,
    smart_server,
    token_request,
)
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend) as running:
        yield running


@pytest.fixture
def browser(server: RunningServer) -> Iterator[Browser]:
    b = Browser(server)
    yield b
    b.close()


def test_standalone_launch_with_patient_picker_end_to_end(server, browser):
    client = register_client(server)
    patient = create_patient(server, "Picked")
    username = register_user(server, "Practitioner/dr-who", may_pick_patient=True)
    verifier, challenge = pkce()

    first = browser.authorize(client.client_id, challenge, state="state-123", nonce="n-456")
    assert first.status_code == 302 and first.headers["location"] == "/auth/login"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/auth" in cookie  # http: see session_cookie

    signed_in = browser.sign_in(username)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/auth/patient"
    picker = browser.http.get("/auth/patient", params={"name": "Picked"})
    assert picker.status_code == 200 and patient in picker.text
    chosen = browser.pick_patient(patient)
    assert chosen.status_code == 303
    params = query_of(chosen.headers["location"])
    assert chosen.headers["location"].startswith(REDIRECT + "?")
    assert params["state"] == "state-123"

    response = redeem(server, client.client_id, params["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == server.settings.access_token_lifetime_seconds
    assert token["patient"] == patient and token["need_patient_banner"] is True
    assert token["smart_style_url"] == f"{server.root}/auth/smart-style.json"
    assert set(token["scope"].split()) == {"openid", "fhirUser", "profile", "launch/patient", "offline_access"} | {
        "patient/*.rs",
        "user/*.rs",
    }
    assert token["refresh_token"]

    keys = KeySet.import_key_set(httpx.get(f"{server.root}/auth/jwks").json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS384"]).claims
    assert id_token["iss"] == f"{server.root}/auth" and id_token["aud"] == client.client_id
    assert id_token["fhirUser"] == f"{server.fhir_base}/Practitioner/dr-who" and id_token["nonce"] == "n-456"
    access = jwt.decode(token["access_token"], keys, algorithms=["RS384"]).claims
    assert access["aud"] == server.fhir_base and access["patient"] == patient and access["sid"]

    headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.fhir_base}/metadata", headers=headers).status_code == 200
    assert httpx.get(f"{server.fhir_base}/Patient/{patient}", headers=headers).status_code == 200


def test_a_patient_user_gets_their_own_record_and_no_user_scopes(server, browser):
    client = register_client(server)
    patient = create_patient(server, "Self")
    username = register_user(server, f"Patient/{patient}")
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    token = redeem(server, client.client_id, code, verifier).json()
    assert token["patient"] == patient
    assert "user/*.rs" not in token["scope"].split() and "patient/*.rs" in token["scope"].split()


def test_without_a_patient_no_patient_scopes_are_granted(server, browser):
    client = register_client(server)
    username = register_user(server)  # may not pick a patient
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    token = redeem(server, client.client_id, code, verifier).json()
    assert "patient" not in token
    assert not any(s.startswith("patient/") or s == "launch/patient" for s in token["scope"].split())


def test_requested_scope_is_intersected_with_the_registration_and_malformed_scopes_dropped(server, browser):
    client = register_client(server, scope="openid fhirUser user/Observation.rs")
    username = register_user(server)
    verifier, challenge = pkce()
    scope = "openid user/Observation.rs user/Patient.rs user/Observation.xyz patient/Nope.rs system/*.rs"
    code, _ = browser.code_for(client.client_id, username, challenge, scope=scope)
    assert redeem(server, client.client_id, code, verifier).json()["scope"] == "openid user/Observation.rs"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "PKCE is required"),
        ({"code_challenge_method": "plain"}, "S256"),
        ({"aud": "https://elsewhere.example/fhir"}, "aud"),
        ({"state": None}, "state"),
        ({"launch": "no-such-launch"}, "launch"),
    ],
)
def test_authorize_errors_go_back_to_a_verified_redirect_uri(server, browser, overrides, fragment):
    client = register_client(server)
    _, challenge = pkce()
    response = browser.authorize(client.client_id, challenge, **{"state": "s-1", **overrides})
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT)
    assert params["error"] == "invalid_request" and fragment in params["error_description"]
    assert params.get("state") == overrides.get("state", "s-1")


@pytest.mark.parametrize(
    "redirect_uri", [REDIRECT + "/evil", REDIRECT + "?x=1", "https://attacker.example/callback", REDIRECT.upper()]
)
def test_unregistered_redirect_uri_is_refused_with_a_page_not_a_redirect(server, browser, redirect_uri):
    client = register_client(server)
    response = browser.authorize(client.client_id, pkce()[1], redirect_uri=redirect_uri)
    assert response.status_code == 400 and "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


def test_unknown_client_is_a_page(server, browser):
    response = browser.authorize("no-such-client", pkce()[1])
    assert response.status_code == 400 and "location" not in response.headers


@pytest.mark.parametrize("verifier", [None, "wrong-verifier-" + "x" * 40])
def test_token_request_without_or_with_a_wrong_verifier_is_refused(server, browser, verifier):
    client = register_client(server)
    username = register_user(server)
    _, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    response = redeem(server, client.client_id, code, verifier)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "invalid_grant")


def test_token_request_with_another_redirect_uri_is_refused(server, browser):
    client = register_client(server, redirect_uris=[REDIRECT, REDIRECT + "/2"])
    username = register_user(server)
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT + "/2"}
    response = token_request(server, {**data, "client_id": client.client_id, "code_verifier": verifier})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_reused_code_is_refused_and_revokes_the_tokens_it_issued(server, browser):
    client = register_client(server)
    username = register_user(server)
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    first = redeem(server, client.client_id, code, verifier).json()
    assert introspect_active(server, first["access_token"])

    again = redeem(server, client.client_id, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert not introspect_active(server, first["access_token"])
    refreshed = token_request(
        server,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client.client_id},
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_code_of_another_client_is_refused(server, browser):
    client, other = register_client(server), register_client(server)
    username = register_user(server)
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    assert redeem(server, other.client_id, code, verifier).json()["error"] == "invalid_grant"
    assert redeem(server, client.client_id, code, verifier).status_code == 200  # not burnt by the attempt


def test_confidential_client_authenticates_with_client_secret_basic(server, browser):
    client = register_client(server, kind="secret")
    username = register_user(server)
    verifier, challenge = pkce()
    code, _ = browser.code_for(client.client_id, username, challenge)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    as_public = token_request(server, {**data, "client_id": client.client_id})
    assert as_public.status_code in (400, 401) and as_public.json()["error"] == "invalid_client"
    wrong = token_request(server, data, auth=(client.client_id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert token_request(server, data, auth=(client.client_id, client.secret or "")).status_code == 200


def test_sign_in_refusals_wrong_password_missing_csrf_and_cancel(server, browser):
    client = register_client(server)
    username = register_user(server)
    browser.authorize(client.client_id, pkce()[1], state="s-cancel")
    assert browser.sign_in(username, "wrong password").status_code == 401
    forged = browser.http.post("/auth/login", data={"username": username, "password": PASSWORD, "csrf_token": "x"})
    assert forged.status_code == 403
    cancelled = browser.sign_in(username, action="cancel")
    params = query_of(cancelled.headers["location"])
    assert params["error"] == "access_denied" and params["state"] == "s-cancel"


def test_signed_in_user_is_not_asked_again(server, browser):
    client = register_client(server)
    username = register_user(server)
    _, challenge = pkce()
    browser.code_for(client.client_id, username, challenge)
    second = browser.authorize(client.client_id, challenge, state="again")
    assert second.status_code == 302 and query_of(second.headers["location"])["state"] == "again"


def test_authorize_by_post(server, browser):
    client = register_client(server)
    form = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "posted",
        "aud": server.fhir_base,
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    response = browser.http.post("/auth/authorize", data=form)
    assert response.status_code == 303 and response.headers["location"] == "/auth/login"


def introspect_active(server: RunningServer, token: str) -> bool:
    probe = register_client(server, kind="secret")
    response = introspect(server, token, basic=(probe.client_id, probe.secret))
    assert response.status_code == 200, response.text
    return response.json()["active"]

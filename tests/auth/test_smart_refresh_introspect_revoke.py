"""Refresh tokens with rotation (RFC 6749 §6, OAuth 2.0 Security BCP §4.14: a reused refresh token revokes the
grant), token introspection (RFC 7662 and SMART's Token Introspection page) and revocation (RFC 7009)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.auth.smart_support import (
    Browser,
    create_patient,
    introspect,
    pkce,
    register_client,
    register_user,
    smart_server,
    token_request,
)
from tests.support.server import RunningServer
from tests.support.tokens import mint


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend) as running:
        yield running


@pytest.fixture(scope="module")
def probe(server: RunningServer):
    """A confidential client that introspects (as a resource server would)."""
    client = register_client(server, kind="secret")
    return client.client_id, client.secret


def grant(server: RunningServer, scope: str | None = None, kind: str = "public") -> tuple[dict, str, tuple | None]:
    """A fresh authorization code grant: (token response, client_id, basic auth or None)."""
    client = register_client(server, kind=kind)
    username = register_user(server, may_pick_patient=False)
    browser = Browser(server)
    try:
        verifier, challenge = pkce()
        overrides = {"scope": scope} if scope else {}
        code, _ = browser.code_for(client.client_id, username, challenge, **overrides)
    finally:
        browser.close()
    auth = (client.client_id, client.secret) if client.secret else None
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example.org/callback"}
    data["code_verifier"] = verifier
    if auth is None:
        data["client_id"] = client.client_id
    response = token_request(server, data, auth)
    assert response.status_code == 200, response.text
    return response.json(), client.client_id, auth


def refresh(server: RunningServer, client_id: str, refresh_token: str, auth=None, **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    if auth is None:
        data["client_id"] = client_id
    return token_request(server, data, auth)


def active(server: RunningServer, probe, token: str) -> bool:
    response = introspect(server, token, basic=probe)
    assert response.status_code == 200, response.text
    return response.json()["active"]


def test_refresh_rotates_and_keeps_the_context(server, probe):
    first, client_id, _ = grant(server, "openid offline_access user/*.rs")
    second = refresh(server, client_id, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"] and body["scope"] == first["scope"]
    assert active(server, probe, body["access_token"]) and active(server, probe, body["refresh_token"])
    assert not active(server, probe, first["refresh_token"])  # used


def test_reusing_a_rotated_refresh_token_revokes_the_whole_grant(server, probe):
    first, client_id, _ = grant(server, "offline_access user/*.rs")
    second = refresh(server, client_id, first["refresh_token"]).json()
    third = refresh(server, client_id, second["refresh_token"]).json()

    replay = refresh(server, client_id, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # The newest refresh token of the chain is dead too, and every access token of the grant (same sid).
    assert refresh(server, client_id, third["refresh_token"]).json()["error"] == "invalid_grant"
    for token in (first["access_token"], second["access_token"], third["access_token"]):
        assert not active(server, probe, token)
    headers = {"Authorization": f"Bearer {third['access_token']}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.fhir_base}/Patient", headers=headers).status_code == 401


def test_refresh_may_narrow_but_not_widen_the_scope(server):
    first, client_id, _ = grant(server, "offline_access user/*.rs user/Observation.rs")
    narrowed = refresh(server, client_id, first["refresh_token"], scope="user/Observation.rs")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "user/Observation.rs"
    # The grant itself is unchanged: the next refresh may ask for all of it again.
    again = refresh(server, client_id, narrowed.json()["refresh_token"])
    assert set(again.json()["scope"].split()) == {"offline_access", "user/*.rs", "user/Observation.rs"}
    wider = refresh(server, client_id, again.json()["refresh_token"], scope="user/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_no_refresh_token_without_offline_or_online_access(server):
    body, _, _ = grant(server, "openid user/*.rs")
    assert "refresh_token" not in body


def test_refresh_token_of_another_client_is_refused(server):
    first, _, _ = grant(server, "offline_access user/*.rs")
    other = register_client(server)
    assert refresh(server, other.client_id, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_confidential_client_refreshes_with_its_secret(server):
    first, client_id, auth = grant(server, "offline_access user/*.rs", kind="secret")
    assert refresh(server, client_id, first["refresh_token"], auth).status_code == 200


def test_introspection_reports_smart_fields(server, probe):
    patient = create_patient(server, "Introspected")
    token = mint(server, "patient/*.rs", patient=patient, fhirUser="Practitioner/p9", client_id="some-app")
    body = introspect(server, token, basic=probe).json()
    assert body["active"] is True and body["scope"] == "patient/*.rs" and body["client_id"] == "some-app"
    assert body["patient"] == patient and body["fhirUser"] == f"{server.fhir_base}/Practitioner/p9"
    assert isinstance(body["exp"], int) and body["sub"] == "tester"


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "x" * 600],
)
def test_unknown_tokens_are_inactive(server, probe, token):
    assert introspect(server, token, basic=probe).json() == {"active": False}


def test_expired_and_foreign_tokens_are_inactive(server, probe):
    expired = mint(server, "system/*.rs", exp=1, iat=0)
    foreign = mint(server, "system/*.rs", iss="https://other.example/auth")
    elsewhere = mint(server, "system/*.rs", aud="https://other.example/fhir")
    for token in (expired, foreign, elsewhere):
        assert not active(server, probe, token)


def test_introspection_with_a_bearer_token(server):
    caller = mint(server, "system/*.rs")
    assert introspect(server, mint(server, "user/*.rs"), bearer=caller).json()["active"] is True
    refused = introspect(server, caller, bearer="not-a-token")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"


def test_introspection_needs_authentication(server):
    token = mint(server, "system/*.rs")
    assert introspect(server, token).status_code == 401
    public = register_client(server)
    response = httpx.post(f"{server.root}/auth/introspect", data={"token": token, "client_id": public.client_id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    secret = register_client(server, kind="secret")
    assert introspect(server, token, basic=(secret.client_id, "wrong")).status_code == 401


def test_revoking_an_access_token(server, probe):
    body, client_id, _ = grant(server, "offline_access user/*.rs")
    response = httpx.post(
        f"{server.root}/auth/revoke",
        data={"token": body["access_token"], "token_type_hint": "access_token", "client_id": client_id},
    )
    assert response.status_code == 200
    assert not active(server, probe, body["access_token"])
    headers = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.fhir_base}/Patient", headers=headers).status_code == 401
    assert active(server, probe, body["refresh_token"])  # only that access token


def test_revoking_a_refresh_token_revokes_the_grant(server, probe):
    body, client_id, auth = grant(server, "offline_access user/*.rs", kind="secret")
    response = httpx.post(f"{server.root}/auth/revoke", data={"token": body["refresh_token"]}, auth=auth)
    assert response.status_code == 200
    assert not active(server, probe, body["refresh_token"]) and not active(server, probe, body["access_token"])
    assert refresh(server, client_id, body["refresh_token"], auth).json()["error"] == "invalid_grant"


def test_revocation_rules(server):
    body, _, _ = grant(server, "offline_access user/*.rs")
    other = register_client(server)
    foreign = httpx.post(
        f"{server.root}/auth/revoke", data={"token": body["refresh_token"], "client_id": other.client_id}
    )
    assert foreign.status_code in (400, 401) and foreign.json()["error"] == "invalid_client"
    unknown = httpx.post(f"{server.root}/auth/revoke", data={"token": "never-issued", "client_id": other.client_id})
    assert unknown.status_code == 200  # RFC 7009 §2.2: invalid tokens do not cause an error
    anonymous = httpx.post(f"{server.root}/auth/revoke", data={"token": body["refresh_token"]})
    assert anonymous.status_code in (400, 401) and anonymous.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("data", "content_type", "error"),
    [
        ({"grant_type": "password", "username": "a", "password": "b"}, None, "unsupported_grant_type"),
        ({"grant_type": ""}, None, "unsupported_grant_type"),
        ({}, None, "invalid_request"),  # no form body at all
        ("grant_type=refresh_token&grant_type=refresh_token", "application/x-www-form-urlencoded", "invalid_request"),
        ('{"grant_type": "client_credentials"}', "application/json", "invalid_request"),
        (b"grant_type=\xff", "application/x-www-form-urlencoded", "invalid_request"),
    ],
)
def test_token_endpoint_errors_are_oauth_json(server, data, content_type, error):
    if isinstance(data, dict):
        response = httpx.post(f"{server.root}/auth/token", data=data)
    else:
        response = httpx.post(f"{server.root}/auth/token", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 400 and response.json()["error"] == error
    assert response.headers["content-type"].startswith("application/json")


def test_oversized_token_request_is_413(server):
    response = httpx.post(f"{server.root}/auth/token", data={"grant_type": "x", "pad": "a" * 70_000})
    assert response.status_code == 413 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/auth/token", "/auth/introspect", "/auth/revoke", "/auth/launch"])
def test_machine_endpoints_accept_post_only(server, path):
    response = httpx.get(f"{server.root}{path}", params={"grant_type": "client_credentials"})
    assert response.status_code == 405 and response.json()["error"] == "invalid_request"
    assert response.headers["allow"] == "POST"

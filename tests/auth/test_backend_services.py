"""SMART Backend Services (SMART App Launch 2, "Backend Services"; RFC 7523 §2.2): client_credentials with a
``private_key_jwt`` assertion signed RS384 or ES384 by a freshly generated key.  Refused (docs/security.md): a reused
``jti``, ``exp`` more than five minutes ahead, an expired assertion, an unknown ``kid``, a ``jku`` that is not the
client's registered jwks_url nor on the allow-list, another audience, iss ≠ sub, other algorithms."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from tests.auth.smart_support import (
    assertion,
    backend_key,
    backend_token,
    public_jwks,
    register_client,
    smart_server,
    unique,
)
from tests.support.jwks_host import serve_jwks
from tests.support.server import RunningServer

JWKS_DOCUMENTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[str]:
    """A stand-in for an integrator's web server publishing its JWKS."""
    with serve_jwks(JWKS_DOCUMENTS) as root:
        yield root


@pytest.fixture(scope="module")
def server(database_url: str, backend: str, jwks_host: str) -> Iterator[RunningServer]:
    allowed = [f"{jwks_host}/allowed.json"]
    with smart_server(database_url, backend, jku_allow_list=allowed) as running:
        yield running


def backend_client(server: RunningServer, alg: str = "RS384", **options):
    key = backend_key(alg)
    client = register_client(server, kind="jwks", jwks=public_jwks(key), **options)
    return client, key


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_token_with_a_fresh_key(server, alg):
    client, key = backend_client(server, alg, scope="system/*.rs")
    response = backend_token(server, assertion(server, client.client_id, key, alg))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs" and body["expires_in"] > 0
    assert "refresh_token" not in body and "patient" not in body and "id_token" not in body
    keys = KeySet.import_key_set(httpx.get(f"{server.root}/auth/jwks").json())
    claims = jwt.decode(body["access_token"], keys, algorithms=["RS384"]).claims
    assert claims["sub"] == client.client_id == claims["client_id"] and claims["aud"] == server.fhir_base
    headers = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.fhir_base}/Patient", headers=headers).status_code == 200


def test_granted_scope_is_the_system_scopes_the_client_is_registered_for(server):
    client, key = backend_client(server, scope="system/*.rs system/Observation.cruds")
    signed = assertion(server, client.client_id, key, "RS384")
    requested = "system/Observation.rs patient/*.rs system/Patient.cruds launch openid system/Observation.xyz"
    response = backend_token(server, signed, requested)
    assert response.status_code == 200 and response.json()["scope"] == "system/Observation.rs"
    nothing = backend_token(server, assertion(server, client.client_id, key, "RS384"), "system/Patient.cruds")
    assert nothing.status_code == 400 and nothing.json()["error"] == "invalid_scope"


def test_a_reused_jti_is_refused(server):
    client, key = backend_client(server)
    signed = assertion(server, client.client_id, key, "RS384")
    assert backend_token(server, signed).status_code == 200
    replay = backend_token(server, signed)
    assert replay.status_code in (400, 401) and replay.json()["error"] == "invalid_client"
    assert "jti" in replay.json()["error_description"]


def refused(server: RunningServer, signed: str, words: str) -> None:
    response = backend_token(server, signed)
    assert response.status_code in (400, 401), response.text
    body = response.json()
    assert body["error"] == "invalid_client", body
    assert words in body["error_description"], body


def test_exp_more_than_five_minutes_ahead_is_refused(server):
    client, key = backend_client(server)
    refused(server, assertion(server, client.client_id, key, "RS384", exp=int(time.time()) + 600), "five minutes")


def test_expired_assertion_is_refused(server):
    client, key = backend_client(server)
    refused(server, assertion(server, client.client_id, key, "RS384", exp=int(time.time()) - 120), "expired")


def test_unknown_kid_is_refused(server):
    client, key = backend_client(server)
    stranger = backend_key("RS384")  # same shape, never registered
    refused(server, assertion(server, client.client_id, stranger, "RS384"), "kid")
    refused(server, assertion(server, client.client_id, key, "RS384", header={"kid": "nope"}), "kid")


def _without_kid(server: RunningServer, client_id: str, key, alg: str) -> str:
    return assertion(server, client_id, key, alg, header={"kid": None})


def test_an_assertion_without_kid_uses_the_one_key_that_fits_its_algorithm(server):
    """Issue 17, finding 1, for Backend Services: no ``kid`` → the client's one key for the algorithm (an RSA key
    beside an EC key is still the only one for RS384); two keys that fit → refused."""
    rsa, ec = backend_key("RS384"), backend_key("ES384")
    client = register_client(server, kind="jwks", jwks=public_jwks(rsa, ec), scope="system/*.rs")
    assert backend_token(server, _without_kid(server, client.client_id, rsa, "RS384")).status_code == 200
    assert backend_token(server, _without_kid(server, client.client_id, ec, "ES384")).status_code == 200
    first, second = backend_key("RS384"), backend_key("RS384")
    two = register_client(server, kind="jwks", jwks=public_jwks(first, second), scope="system/*.rs")
    refused(server, _without_kid(server, two.client_id, first, "RS384"), "no kid")


def test_jku_not_on_the_allow_list_is_refused(server, jwks_host):
    client, _ = backend_client(server)
    attacker = backend_key("RS384")
    JWKS_DOCUMENTS["/attacker.json"] = public_jwks(attacker)
    header = {"jku": f"{jwks_host}/attacker.json"}
    refused(server, assertion(server, client.client_id, attacker, "RS384", header=header), "allow-list")


def test_jku_on_the_allow_list_is_used(server, jwks_host):
    client, _ = backend_client(server)
    published = backend_key("ES384")
    JWKS_DOCUMENTS["/allowed.json"] = public_jwks(published)
    header = {"jku": f"{jwks_host}/allowed.json"}
    response = backend_token(server, assertion(server, client.client_id, published, "ES384", header=header))
    assert response.status_code == 200, response.text


def test_registered_jwks_url_is_fetched(server, jwks_host):
    key = backend_key("RS384")
    JWKS_DOCUMENTS["/client-b.json"] = public_jwks(key)
    client = register_client(server, kind="jwks_url", jwks_url=f"{jwks_host}/client-b.json")
    assert backend_token(server, assertion(server, client.client_id, key, "RS384")).status_code == 200
    # jku naming the client's own jwks_url is allowed as well
    header = {"jku": f"{jwks_host}/client-b.json"}
    assert backend_token(server, assertion(server, client.client_id, key, "RS384", header=header)).status_code == 200


def test_other_audience_and_mismatched_issuer_are_refused(server):
    client, key = backend_client(server)
    refused(server, assertion(server, client.client_id, key, "RS384", aud=f"{server.root}/other"), "aud")
    refused(server, assertion(server, client.client_id, key, "RS384", iss="someone-else"), "iss")
    refused(server, assertion(server, "no-such-client", key, "RS384"), "does not exist")


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
def test_other_algorithms_are_refused(server, alg):
    kid = unique("k")
    signer = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True) if alg == "RS256" else None
    client = register_client(server, kind="jwks", jwks=public_jwks(signer or backend_key("RS384")))
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": f"{server.root}/auth/token"}
    if alg == "HS256":  # the key-confusion forgery: HMAC keyed with public material
        signer, kid = OctKey.generate_key(256, parameters={"kid": kid}), kid
    signed = jwt.encode({"alg": alg, "kid": kid}, claims, signer, algorithms=[alg])
    refused(server, signed, "RS384 or ES384")


def test_key_type_must_match_the_algorithm(server):
    client, key = backend_client(server, "ES384")
    rsa = RSAKey.generate_key(2048, parameters={"kid": key.kid}, private=True)
    # RS384 named with the kid of the registered EC key: that key cannot verify an RSA signature
    claims = {"iss": client.client_id, "sub": client.client_id}
    forged = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, rsa, algorithms=["RS384"])
    refused(server, forged, "cannot verify")


def test_only_asymmetric_clients_use_client_credentials(server):
    secret = register_client(server, kind="secret")
    data = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    response = httpx.post(f"{server.root}/auth/token", data=data, auth=(secret.client_id, secret.secret or ""))
    assert response.status_code in (400, 401) and response.json()["error"] in ("invalid_client", "unauthorized_client")
    public = register_client(server)
    response = httpx.post(f"{server.root}/auth/token", data={**data, "client_id": public.client_id})
    assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"

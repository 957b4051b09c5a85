"""SMART App Launch 2 "Conformance" (.well-known/smart-configuration at the server root and under the FHIR
base), OpenID Connect Discovery, the JWKS, and the browser-facing safety of issue 6 point 5: security headers on
the pages (CSP frame-ancestors from FHIR_SERVER_FRAME_ANCESTORS, nosniff, no referrer), the login cookie's
attributes over https, CORS only for origins registered with a client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from fhir_server.web.login_routes import session_cookie
from tests.auth.smart_support import register_client, smart_server, unique
from tests.support.server import RunningServer

EHR = "https://ehr.example.org"
REQUIRED_CAPABILITIES = {
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
}


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend, frame_ancestors=[EHR]) as running:
        yield running


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
def test_smart_configuration(server, path):
    response = httpx.get(f"{server.root}{path}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    config = response.json()
    root = server.root
    assert config["issuer"] == f"{root}/auth" and config["jwks_uri"] == f"{root}/auth/jwks"
    assert config["authorization_endpoint"] == f"{root}/auth/authorize"
    assert config["token_endpoint"] == f"{root}/auth/token"
    assert config["introspection_endpoint"] == f"{root}/auth/introspect"
    assert config["revocation_endpoint"] == f"{root}/auth/revoke"
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert set(config["grant_types_supported"]) >= {"authorization_code", "client_credentials", "refresh_token"}
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    assert "system/*.rs" in config["scopes_supported"]
    assert set(config["capabilities"]) >= REQUIRED_CAPABILITIES


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/auth/.well-known/openid-configuration"])
def test_openid_configuration(server, path):
    config = httpx.get(f"{server.root}{path}").json()
    assert config["issuer"] == f"{server.root}/auth" and config["jwks_uri"] == f"{server.root}/auth/jwks"
    assert "RS384" in config["id_token_signing_alg_values_supported"]


def test_jwks_publishes_public_keys_only(server):
    keys = httpx.get(f"{server.root}/auth/jwks").json()["keys"]
    assert keys and all(k.get("kid") for k in keys)
    assert not any(private in k for k in keys for private in ("d", "p", "q", "dp", "dq", "qi"))


def test_smart_style(server):
    assert "color_background" in httpx.get(f"{server.root}/auth/smart-style.json").json()


def test_pages_carry_security_headers(server):
    response = httpx.get(f"{server.root}/auth/login")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert f"frame-ancestors 'self' {EHR}" in policy and "default-src 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    css = httpx.get(f"{server.root}/static/auth.css")
    assert css.status_code == 200 and css.headers["x-content-type-options"] == "nosniff"


def test_cors_only_for_registered_origins(server):
    origin = f"https://{unique('app')}.example.org"
    register_client(server, origins=[origin])
    stranger = "https://evil.example.org"
    for path in ("/auth/token", "/.well-known/smart-configuration", "/auth/jwks"):
        preflight = httpx.options(
            f"{server.root}{path}",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin
        refused = httpx.options(
            f"{server.root}{path}", headers={"Origin": stranger, "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in refused.headers
    allowed = httpx.get(f"{server.root}/.well-known/smart-configuration", headers={"Origin": origin})
    assert allowed.headers["access-control-allow-origin"] == origin and "Origin" in allowed.headers["vary"]
    other = httpx.get(f"{server.root}/.well-known/smart-configuration", headers={"Origin": stranger})
    assert "access-control-allow-origin" not in other.headers
    page = httpx.get(f"{server.root}/auth/login", headers={"Origin": origin})
    assert "access-control-allow-origin" not in page.headers  # pages never get CORS


def _request(scheme: str) -> Request:
    scope = {"type": "http", "scheme": scheme, "server": ("fhir.example.org", 443), "method": "GET", "path": "/"}
    return Request({**scope, "headers": [], "query_string": b""})


def test_login_cookie_over_https_is_secure_samesite_none_partitioned(server):
    over_https = session_cookie("v", _request("https"), server.settings)
    assert {"HttpOnly", "Secure", "SameSite=None", "Partitioned"} <= set(over_https.split("; "))
    over_http = session_cookie("v", _request("http"), server.settings)
    assert "Secure" not in over_http.split("; ") and "SameSite=Lax" in over_http.split("; ")
    forced = session_cookie("v", _request("http"), server.settings.model_copy(update={"cookie_secure": True}))
    assert "Secure" in forced.split("; ")


def test_fhir_routes_still_answer_next_to_well_known(server):
    assert httpx.get(f"{server.fhir_base}/metadata").status_code == 200

"""Helpers for the authorization-server tests: registering clients and users, a cookie-keeping "browser" that
walks /auth/authorize → sign-in → (patient picker) → redirect, PKCE pairs and Backend Services assertions."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from fhir_server.auth import admin
from tests.support.server import RunningServer
from tests.support.tokens import auth_server, mint

REDIRECT = "https://app.example.org/callback"
PASSWORD = "correct horse battery"
APP_SCOPE = "openid fhirUser profile launch launch/patient offline_access patient/*.rs user/*.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@contextmanager
def smart_server(database_url: str, backend: str, **settings: Any) -> Iterator[RunningServer]:
    with auth_server(database_url, backend, load_library=False, **settings) as running:
        yield running


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def register_client(server: RunningServer, kind: str = "public", **options: Any) -> admin.NewClient:
    options.setdefault("redirect_uris", [] if kind in ("jwks", "jwks_url") else [REDIRECT])
    options.setdefault("scope", "system/*.rs" if kind in ("jwks", "jwks_url") else APP_SCOPE)
    return admin.add_client(server.app.state.engine, name="Test client", kind=kind, client_id=unique("c"), **options)


def register_user(server: RunningServer, fhir_user: str = "Practitioner/p1", *, may_pick_patient: bool = False) -> str:
    username = unique("user")
    admin.add_user(server.app.state.engine, username, PASSWORD, fhir_user, may_pick_patient=may_pick_patient)
    return username


def create_patient(server: RunningServer, family: str) -> str:
    """Through the FHIR API with a system token, as an integrator would."""
    token = mint(server, "system/*.cruds")
    body = {"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}], "birthDate": "1990-01-01"}
    response = httpx.post(
        f"{server.fhir_base}/Patient",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class Browser:
    """A user agent with a cookie jar that never follows redirects (tests read each Location)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.root, follow_redirects=False, timeout=30)

    def close(self) -> None:
        self.http.close()

    def authorize(self, client_id: str, challenge: str | None, **overrides: Any) -> httpx.Response:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": APP_SCOPE,
            "state": secrets.token_urlsafe(16),
            "aud": self.server.fhir_base,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **overrides,
        }
        return self.http.get("/auth/authorize", params={k: v for k, v in params.items() if v is not None})

    def sign_in(self, username: str, password: str = PASSWORD, action: str = "login") -> httpx.Response:
        page = self.http.get("/auth/login")
        assert page.status_code == 200, page.text
        form = {"csrf_token": csrf_of(page.text), "username": username, "password": password, "action": action}
        return self.http.post("/auth/login", data=form)

    def pick_patient(self, patient_id: str) -> httpx.Response:
        page = self.http.get("/auth/patient")
        assert page.status_code == 200, page.text
        return self.http.post("/auth/patient", data={"csrf_token": csrf_of(page.text), "patient": patient_id})

    def code_for(self, client_id: str, username: str, challenge: str, **overrides: Any) -> tuple[str, str]:
        """Authorize and sign in; returns (code, state)."""
        state = overrides.pop("state", secrets.token_urlsafe(16))
        first = self.authorize(client_id, challenge, state=state, **overrides)
        assert first.status_code == 302 and first.headers["location"] == "/auth/login", first.text
        done = self.sign_in(username)
        assert done.status_code == 303, done.text
        params = query_of(done.headers["location"])
        assert params.get("state") == state and "code" in params, done.headers["location"]
        return params["code"], state


def token_request(server: RunningServer, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.root}/auth/token", data=data, auth=auth, timeout=30)


def redeem(server: RunningServer, client_id: str, code: str, verifier: str | None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    if verifier is not None:
        data["code_verifier"] = verifier
    return token_request(server, data)


def backend_key(alg: str) -> RSAKey | ECKey:
    parameters = {"kid": unique("k"), "alg": alg, "use": "sig"}
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters=parameters, private=True)
    return RSAKey.generate_key(2048, parameters=parameters, private=True)


def public_jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(
    server: RunningServer, client_id: str, key: RSAKey | ECKey, alg: str, *, header: Any = None, **claims: Any
) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{server.root}/auth/token",
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    # header values of None drop the field (an assertion without kid)
    fields = {k: v for k, v in {"alg": alg, "kid": key.kid, "typ": "JWT", **(header or {})}.items() if v is not None}
    return jwt.encode(fields, body, key, algorithms=[alg])


def backend_token(server: RunningServer, signed: str, scope: str = "system/*.rs") -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }
    return token_request(server, data)


def introspect(server: RunningServer, token: str, *, bearer: str | None = None, basic: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.post(f"{server.root}/auth/introspect", data={"token": token}, headers=headers, auth=basic, timeout=30)

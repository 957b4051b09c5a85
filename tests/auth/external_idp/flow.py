"""The steps of a sign-in through the external identity provider, for tests/auth/external_idp: the provider (a
second instance of this server with its own database, behind an armable relay), this server registered there as a
client, the provider's users and their links here, and the browser's way through both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from fhir_server.auth import admin
from fhir_server.config import Settings
from tests.auth.external_idp.support import IDP_SCOPE, Relay, Sites, cli, printed
from tests.auth.smart_support import PASSWORD, REDIRECT, csrf_of, pkce, query_of, unique
from tests.support.server import RunningServer, ServerThread, free_port
from tests.support.tokens import mint

CALLBACK = "/auth/login/oidc/callback"


@dataclass
class Provider:
    server: RunningServer
    relay: Relay
    issuer: str  # the relay's origin + /auth: the provider's public URL is the relay


@dataclass
class Ours:
    server: RunningServer
    client_id: str  # our registration at the provider
    secret: str

    @property
    def root(self) -> str:
        return self.server.root


@contextmanager
def our_server(
    provider: Provider, database_url: str, backend: str, *, by_cli: bool = False, **settings: Any
) -> Iterator[Ours]:
    """This server, registered at the provider as a client whose redirect URI is its callback."""
    port = free_port()
    callback = f"http://127.0.0.1:{port}{CALLBACK}"
    method = settings.get("oidc_token_auth_method", "client_secret_basic")
    if by_cli:
        added = cli(
            provider.server.settings.database_url,
            *("clients", "add", "--name", "FHIR server sign-in", "--secret"),
            *("--redirect-uri", callback, "--scope", IDP_SCOPE),
        )
        assert added.returncode == 0, added.stderr
        client_id, secret = printed(added.stdout, "client_id"), printed(added.stdout, "client_secret")
    else:
        kind = "jwks_url" if method == "private_key_jwt" else "secret"
        jwks_url = f"http://127.0.0.1:{port}/auth/jwks" if kind == "jwks_url" else None
        created = admin.add_client(
            provider.server.app.state.engine,
            name="FHIR server sign-in",
            kind=kind,
            redirect_uris=[callback],
            scope=IDP_SCOPE,
            jwks_url=jwks_url,
            client_id=unique("rp"),
        )
        client_id, secret = created.client_id, created.secret or ""
    options = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": client_id,
        "oidc_client_secret": secret,
        "oidc_display_name": "Test IdP",
        **settings,
    }
    config = Settings(database_url=database_url, auth_required=True, load_library=False, _env_file=None, **options)
    with ServerThread(config, backend, port=port) as running:
        yield Ours(running, client_id, secret)


def provider_user(provider: Provider) -> tuple[str, str]:
    """A user of the provider: (username, sub)."""
    username = unique("idp-user")
    added = cli(
        provider.server.settings.database_url,
        *("users", "add", username, "--fhir-user", "Practitioner/at-the-idp", "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    assert added.returncode == 0, added.stderr
    return username, added.stdout.split(", sub ")[1].strip()


def link(ours: Ours, provider: Provider, external_subject: str, fhir_user: str) -> str:
    """A local user who signs in as ``external_subject`` at the provider (no local password)."""
    username = unique("local")
    admin.add_user(
        ours.server.app.state.engine,
        username,
        None,
        fhir_user,
        may_pick_patient=False,
        external_subject=external_subject,
        external_issuer=provider.issuer,
    )
    return username


def to_provider(sites: Sites, ours: Ours, client_id: str, challenge: str, **params: str) -> str:
    """An app sends the user to our /auth/authorize; they press "Sign in with Test IdP".  Returns the provider's
    authorization URL our server redirected to."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser profile user/*.rs",
        "state": params.pop("state", "app-state"),
        "aud": ours.server.fhir_base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    first = sites.get(f"{ours.root}/auth/authorize", params=query)
    assert first.status_code == 302 and first.headers["location"] == "/auth/login", first.text[:500]
    page = sites.get(f"{ours.root}/auth/login")
    assert page.status_code == 200 and "Sign in with Test IdP" in page.text
    go = sites.post(f"{ours.root}/auth/login/oidc", data={"csrf_token": csrf_of(page.text)})
    assert go.status_code == 303, go.text[:500]
    return go.headers["location"]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**query_of(url), **changes})))


def assert_signed_out(sites: Sites, ours: Ours, client_id: str) -> None:
    """Nothing half-done: a new authorization from the same browser still needs a sign-in."""
    again = sites.get(
        f"{ours.root}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s",
            "aud": ours.server.fhir_base,
            "code_challenge": pkce()[1],
            "code_challenge_method": "S256",
        },
    )
    assert again.status_code == 302 and again.headers["location"] == "/auth/login"


def sign_in_events(server: RunningServer, fhir_user: str) -> list[dict]:
    token = mint(server, "system/AuditEvent.rs")
    deadline = time.monotonic() + 10
    while True:  # the audit writer stores events in the background every 200 ms
        answer = httpx.get(
            f"{server.fhir_base}/AuditEvent",
            params={"agent": fhir_user, "_count": "50"},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        )
        assert answer.status_code == 200, answer.text
        events = [e["resource"] for e in answer.json().get("entry", [])]
        events = [e for e in events if e["subtype"][0]["code"] == "110122"]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.1)

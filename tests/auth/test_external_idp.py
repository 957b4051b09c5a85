"""Sign-in through an external OpenID Connect identity provider (issue 6 point 1), over real HTTP.

The provider is a second instance of this server with its own database: our server is registered there as a
confidential client with ``fhir-server clients add`` and its user with ``fhir-server users add``, exactly as an
operator would.  The provider is reached through a relay (tests/auth/idp_support.py) that a test can arm to
substitute the id_token of a token response: genuine id_tokens from another issuer or for another client, which
only a compromised connection or provider could deliver, and which must still be refused.

Checked: the whole way from an app's /auth/authorize through the provider back to a token whose fhirUser is the
linked local user (with the session id rotated and the sign-in audited); private_key_jwt at the provider's token
endpoint; the ``sub`` claim as the link; passwords switched off; and each refusal with a clear page and the session
left signed out: a tampered state, a callback in another browser, a replayed callback, a nonce mismatch, an
id_token from another issuer or for another client, an unknown identity, a denial at the provider, the provider
down, and a provider whose discovery names another issuer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from fhir_server.auth import admin
from fhir_server.config import Settings
from tests.auth.idp_support import (
    IDP_SCOPE,
    Relay,
    Sites,
    cancel_at_provider,
    cli,
    genuine_id_token,
    page_text,
    printed,
    sign_in_at_provider,
)
from tests.auth.smart_support import PASSWORD, REDIRECT, csrf_of, pkce, query_of, redeem, register_client, unique
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
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


@pytest.fixture(scope="module")
def provider(backend: str) -> Iterator[Provider]:
    with sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "") as url:
        port = free_port()
        with Relay(f"http://127.0.0.1:{port}") as relay:
            settings = Settings(
                database_url=url, auth_required=True, load_library=False, public_url=relay.root, _env_file=None
            )
            with ServerThread(settings, backend, port=port) as running:
                yield Provider(running, relay, f"{relay.root}/auth")


@pytest.fixture(autouse=True)
def _disarmed(provider: Provider) -> Iterator[None]:
    provider.relay.id_token = None
    yield
    provider.relay.id_token = None


@contextmanager
def our_server(provider: Provider, database_url: str, backend: str, *, by_cli: bool = False, **settings: Any):
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


@pytest.fixture(scope="module")
def ours(provider: Provider, database_url: str, backend: str) -> Iterator[Ours]:
    with our_server(provider, database_url, backend, by_cli=True) as running:
        yield running


@pytest.fixture
def sites() -> Iterator[Sites]:
    browser = Sites()
    yield browser
    browser.close()


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


# -- the whole way ------------------------------------------------------------------------------------------
def test_app_to_provider_and_back_to_a_token_for_the_linked_user(provider, ours, sites):
    app = register_client(ours.server)
    idp_username, _ = provider_user(provider)
    local = link(ours, provider, idp_username, "Practitioner/linked-rivera")
    verifier, challenge = pkce()

    authorize_url = to_provider(sites, ours, app.client_id, challenge, state="app-state-1", nonce="app-nonce")
    assert authorize_url.startswith(f"{provider.relay.root}/auth/authorize?")
    sent = query_of(authorize_url)
    assert sent["client_id"] == ours.client_id and sent["redirect_uri"] == f"{ours.root}{CALLBACK}"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert len(sent["state"]) >= 43 and len(sent["nonce"]) >= 43 and sent["scope"] == "openid profile email"
    cookie_before = sites.clients[ours.root].cookies.get("fhir_auth_session", path="/auth")

    callback = sign_in_at_provider(sites, authorize_url, idp_username)
    assert callback.startswith(f"{ours.root}{CALLBACK}?") and query_of(callback)["state"] == sent["state"]
    done = sites.get(callback)
    assert done.status_code == 302 and done.headers["location"].startswith(REDIRECT + "?"), page_text(done)
    assert "fhir_auth_session=" in done.headers["set-cookie"]  # a new session id at sign-in, as with a password
    assert sites.clients[ours.root].cookies.get("fhir_auth_session", path="/auth") != cookie_before
    answer = query_of(done.headers["location"])
    assert answer["state"] == "app-state-1"

    token = redeem(ours.server, app.client_id, answer["code"], verifier)
    assert token.status_code == 200, token.text
    keys = KeySet.import_key_set(httpx.get(f"{ours.root}/auth/jwks").json())
    id_token = jwt.decode(token.json()["id_token"], keys, algorithms=["RS384"]).claims
    assert id_token["fhirUser"] == f"{ours.server.fhir_base}/Practitioner/linked-rivera"
    assert id_token["preferred_username"] == local and id_token["nonce"] == "app-nonce"
    assert id_token["iss"] == f"{ours.root}/auth"  # our token, not the provider's

    events = sign_in_events(ours.server, "Practitioner/linked-rivera")
    assert events and events[0]["outcome"] == "0" and "through Test IdP" in events[0]["outcomeDesc"]
    assert events[0]["agent"][0]["altId"] == app.client_id

    replayed = sites.get(callback)  # the round trip is single use
    assert replayed.status_code == 400 and "does not belong to a sign-in in progress" in page_text(replayed)


def test_private_key_jwt_at_the_token_endpoint_and_sub_as_the_link(provider, database_url, backend, sites):
    settings = {"oidc_token_auth_method": "private_key_jwt", "oidc_user_claim": "sub", "oidc_scopes": "openid"}
    with our_server(provider, database_url, backend, **settings) as signed_keys:
        app = register_client(signed_keys.server)
        idp_username, sub = provider_user(provider)
        link(signed_keys, provider, sub, "Practitioner/by-sub")
        verifier, challenge = pkce()
        authorize_url = to_provider(sites, signed_keys, app.client_id, challenge)
        assert query_of(authorize_url)["scope"] == "openid"
        done = sites.get(sign_in_at_provider(sites, authorize_url, idp_username))
        assert done.status_code == 302 and done.headers["location"].startswith(REDIRECT), page_text(done)
        token = redeem(signed_keys.server, app.client_id, query_of(done.headers["location"])["code"], verifier)
        keys = KeySet.import_key_set(httpx.get(f"{signed_keys.root}/auth/jwks").json())
        claims = jwt.decode(token.json()["id_token"], keys, algorithms=["RS384"]).claims
        assert claims["fhirUser"].endswith("/Practitioner/by-sub")


def test_with_passwords_off_only_the_provider_is_offered(provider, database_url, backend, sites):
    with our_server(provider, database_url, backend, local_passwords=False) as only_idp:
        app = register_client(only_idp.server)
        username = unique("pw-user")
        admin.add_user(only_idp.server.app.state.engine, username, PASSWORD, "Practitioner/pw", may_pick_patient=False)
        to_provider(sites, only_idp, app.client_id, pkce()[1])
        page = sites.get(f"{only_idp.root}/auth/login")
        assert "Sign in with Test IdP" in page.text and 'name="password"' not in page.text
        form = {"csrf_token": csrf_of(page.text), "username": username, "password": PASSWORD, "action": "login"}
        refused = sites.post(f"{only_idp.root}/auth/login", data=form)
        assert refused.status_code == 403 and "passwords are off" in page_text(refused)


def test_both_ways_are_offered_by_default(ours, sites):
    page = sites.get(f"{ours.root}/auth/login")
    assert "Sign in with Test IdP" in page.text and 'name="password"' in page.text


# -- refusals -----------------------------------------------------------------------------------------------
def test_a_tampered_state_is_refused_and_the_round_trip_is_spent(provider, ours, sites):
    app = register_client(ours.server)
    idp_username, _ = provider_user(provider)
    link(ours, provider, idp_username, "Practitioner/state-test")
    callback = sign_in_at_provider(sites, to_provider(sites, ours, app.client_id, pkce()[1]), idp_username)

    tampered = sites.get(with_query(callback, state="attacker-chosen-state"))
    assert tampered.status_code == 400 and "state mismatch" in page_text(tampered)
    assert "Back to the sign-in page" in tampered.text
    genuine = sites.get(callback)  # checked once: the state was taken with the first answer
    assert genuine.status_code == 400 and "does not belong to a sign-in in progress" in page_text(genuine)
    assert_signed_out(sites, ours, app.client_id)


def test_a_callback_in_another_browser_is_refused(provider, ours, sites):
    """Login CSRF: a victim's browser must not be signed in with the attacker's code and state."""
    app = register_client(ours.server)
    idp_username, _ = provider_user(provider)
    link(ours, provider, idp_username, "Practitioner/csrf-test")
    callback = sign_in_at_provider(sites, to_provider(sites, ours, app.client_id, pkce()[1]), idp_username)
    victim = Sites()
    try:
        answer = victim.get(callback)
        assert answer.status_code == 400 and "does not belong to a sign-in in progress" in page_text(answer)
    finally:
        victim.close()


def test_a_nonce_mismatch_is_refused(provider, ours, sites):
    """A code obtained with another nonce (code injection) fails: PKCE and state alone would let it through."""
    app = register_client(ours.server)
    idp_username, _ = provider_user(provider)
    link(ours, provider, idp_username, "Practitioner/nonce-test")
    authorize_url = to_provider(sites, ours, app.client_id, pkce()[1])
    callback = sign_in_at_provider(sites, with_query(authorize_url, nonce="another-sign-ins-nonce"), idp_username)
    refused = sites.get(callback)
    assert refused.status_code == 400 and "nonce mismatch" in page_text(refused)
    assert_signed_out(sites, ours, app.client_id)


def test_an_id_token_from_another_issuer_is_refused(provider, ours, backend, sites):
    """A second provider instance on the same database signs with the same keys but is another issuer."""
    other = Settings(
        database_url=provider.server.settings.database_url, auth_required=True, load_library=False, _env_file=None
    )
    idp_username, _ = provider_user(provider)
    link(ours, provider, idp_username, "Practitioner/iss-test")
    app = register_client(ours.server)
    authorize_url = to_provider(sites, ours, app.client_id, pkce()[1])
    nonce = query_of(authorize_url)["nonce"]
    with ServerThread(other, backend) as second:
        provider.relay.id_token = genuine_id_token(
            second.root, ours.client_id, ours.secret, f"{ours.root}{CALLBACK}", idp_username, nonce
        )
    refused = sites.get(sign_in_at_provider(sites, authorize_url, idp_username))
    assert refused.status_code == 400 and "issued by another identity provider" in page_text(refused)
    assert_signed_out(sites, ours, app.client_id)


def test_an_id_token_for_another_client_is_refused(provider, ours, sites):
    idp_username, _ = provider_user(provider)
    link(ours, provider, idp_username, "Practitioner/aud-test")
    other_client = admin.add_client(
        provider.server.app.state.engine,
        name="Another relying party",
        kind="secret",
        redirect_uris=["https://other.example.org/cb"],
        scope=IDP_SCOPE,
        client_id=unique("other-rp"),
    )
    app = register_client(ours.server)
    authorize_url = to_provider(sites, ours, app.client_id, pkce()[1])
    provider.relay.id_token = genuine_id_token(
        provider.relay.root,
        other_client.client_id,
        other_client.secret or "",
        "https://other.example.org/cb",
        idp_username,
        query_of(authorize_url)["nonce"],
    )
    refused = sites.get(sign_in_at_provider(sites, authorize_url, idp_username))
    assert refused.status_code == 400 and "meant for another client" in page_text(refused)
    assert_signed_out(sites, ours, app.client_id)


def test_an_unknown_identity_gets_a_clear_page_and_no_account(provider, ours, sites):
    app = register_client(ours.server)
    idp_username, _ = provider_user(provider)  # never linked here
    users_before = len(admin.list_users(ours.server.app.state.engine))
    refused = sites.get(sign_in_at_provider(sites, to_provider(sites, ours, app.client_id, pkce()[1]), idp_username))
    assert refused.status_code == 403
    text = page_text(refused)
    assert "Not registered here" in text and idp_username in text and "--external-subject" in text
    assert len(admin.list_users(ours.server.app.state.engine)) == users_before
    assert_signed_out(sites, ours, app.client_id)


def test_a_denial_at_the_provider_is_a_clear_page_and_the_app_waits(provider, ours, sites):
    app = register_client(ours.server)
    callback = cancel_at_provider(sites, to_provider(sites, ours, app.client_id, pkce()[1]))
    assert query_of(callback)["error"] == "access_denied"
    denied = sites.get(callback)
    assert denied.status_code == 403 and "Test IdP did not sign you in" in page_text(denied)
    page = sites.get(f"{ours.root}/auth/login")  # the app's request still waits for a sign-in
    assert page.status_code == 200 and "Test IdP" in page.text and "Test client" in page.text


def test_the_provider_down_is_a_clear_page(database_url, backend, sites):
    dead = f"http://127.0.0.1:{free_port()}/auth"
    config = Settings(
        database_url=database_url,
        auth_required=True,
        load_library=False,
        _env_file=None,
        oidc_issuer=dead,
        oidc_client_id="rp",
        oidc_client_secret="secret",
        oidc_display_name="Test IdP",
    )
    with ServerThread(config, backend) as running:
        app = register_client(running)
        first = sites.get(
            f"{running.root}/auth/authorize",
            params={
                "response_type": "code",
                "client_id": app.client_id,
                "redirect_uri": REDIRECT,
                "scope": "openid",
                "state": "s",
                "aud": running.fhir_base,
                "code_challenge": pkce()[1],
                "code_challenge_method": "S256",
            },
        )
        assert first.status_code == 302
        page = sites.get(f"{running.root}/auth/login")
        down = sites.post(f"{running.root}/auth/login/oidc", data={"csrf_token": csrf_of(page.text)})
        assert down.status_code == 502 and "cannot be reached" in page_text(down)
        assert "Back to the sign-in page" in down.text


def test_a_provider_announcing_another_issuer_is_not_used(provider, database_url, backend, sites):
    """Configured with the provider's direct address, its discovery document names the relay as issuer."""
    direct = provider.server.root + "/auth"
    with our_server(provider, database_url, backend, oidc_issuer=direct) as misconfigured:
        page = sites.get(f"{misconfigured.root}/auth/login")
        answer = sites.post(f"{misconfigured.root}/auth/login/oidc", data={"csrf_token": csrf_of(page.text)})
        assert answer.status_code == 502 and "announces a different issuer" in page_text(answer)


def test_the_provider_side_needs_no_aud_for_a_sign_in_only_request(provider):
    """This server as another's identity provider: an OpenID Connect request for identity alone may leave out
    SMART's aud; one that asks for data may not."""
    app = register_client(provider.server, scope="openid fhirUser profile patient/*.rs")
    base = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "state": "s",
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    sign_in = httpx.get(f"{provider.server.root}/auth/authorize", params={**base, "scope": "openid profile"})
    assert sign_in.status_code == 302 and sign_in.headers["location"] == "/auth/login"
    data = httpx.get(f"{provider.server.root}/auth/authorize", params={**base, "scope": "openid patient/*.rs"})
    assert data.status_code == 302 and query_of(data.headers["location"])["error"] == "invalid_request"

"""Sign-in through an external OpenID Connect identity provider (issue 6 point 1), over real HTTP: the whole way.

The provider is a second instance of this server with its own database: our server is registered there as a
confidential client with ``fhir-server clients add`` and its users with ``fhir-server users add``, exactly as an
operator would (flow.py).

Checked: from an app's /auth/authorize through the provider back to a token whose fhirUser is the linked local
user (session id rotated, sign-in audited, callback single use); private_key_jwt at the provider's token endpoint
with ``sub`` as the link; passwords switched off; the provider down; a provider whose discovery names another
issuer; and, on the provider's side, that a sign-in-only request needs no SMART ``aud``.
"""

from __future__ import annotations

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from fhir_server.auth import admin
from fhir_server.config import Settings
from tests.auth.external_idp.flow import (
    CALLBACK,
    link,
    our_server,
    provider_user,
    sign_in_events,
    to_provider,
)
from tests.auth.external_idp.support import page_text, sign_in_at_provider
from tests.auth.smart_support import PASSWORD, REDIRECT, csrf_of, pkce, query_of, redeem, register_client, unique
from tests.support.server import ServerThread, free_port


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

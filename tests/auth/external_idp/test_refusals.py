"""Sign-in through an external OpenID Connect identity provider: what must be refused, each with a clear page and
the browser's session left signed out (nothing half-done).

The provider is reached through a relay (support.py) that a test can arm to substitute the id_token
of a token response: genuine id_tokens from another issuer or for another client, which only a compromised
connection or provider could deliver, and which must still be refused.  Also: a tampered state, the callback in
another browser (login CSRF), a nonce mismatch (code injection), an identity nobody linked, a denial at the provider.
"""

from __future__ import annotations

from fhir_server.auth import admin
from fhir_server.config import Settings
from tests.auth.external_idp.flow import (
    CALLBACK,
    assert_signed_out,
    link,
    provider_user,
    to_provider,
    with_query,
)
from tests.auth.external_idp.support import (
    IDP_SCOPE,
    Sites,
    cancel_at_provider,
    genuine_id_token,
    page_text,
    sign_in_at_provider,
)
from tests.auth.smart_support import pkce, query_of, register_client, unique
from tests.support.server import ServerThread


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

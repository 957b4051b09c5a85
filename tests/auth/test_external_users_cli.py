"""``fhir-server users add … --external-subject``: linking a user to their identity at the external OpenID Connect
provider, run as the operator runs it.  The link names the configured provider; without one it is refused; one
identity links to one user; a linked user without a password cannot sign in with one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server.store import oauth_store
from tests.auth.external_idp.support import cli
from tests.auth.smart_support import PASSWORD, Browser, smart_server, unique
from tests.support.server import RunningServer

ISSUER = "https://idp.example.org/realms/clinic"


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend) as running:
        yield running


def test_a_linked_user_is_stored_with_the_providers_issuer_and_no_password(server, database_url):
    username, subject = unique("linked"), unique("dr.lee")
    added = cli(
        database_url,
        *("users", "add", username, "--fhir-user", "Practitioner/lee", "--external-subject", subject),
        FHIR_SERVER_OIDC_ISSUER=ISSUER,
    )
    assert added.returncode == 0, added.stderr
    assert f"signs in at {ISSUER} as preferred_username={subject}" in added.stdout
    row = oauth_store.get_user_by_external(server.app.state.engine, ISSUER, subject)
    assert row is not None and row["username"] == username and row["password_hash"] is None
    assert oauth_store.get_user_by_external(server.app.state.engine, "https://other.example.org", subject) is None
    listed = cli(database_url, "users", "list")
    assert f"external={subject}" in listed.stdout

    browser = Browser(server)
    try:  # no password, so no password works (and it costs the same time as a wrong one)
        assert browser.sign_in(username, PASSWORD).status_code == 401
    finally:
        browser.close()

    again = cli(
        database_url,
        *("users", "add", unique("twin"), "--fhir-user", "Practitioner/twin", "--external-subject", subject),
        FHIR_SERVER_OIDC_ISSUER=ISSUER,
    )
    assert again.returncode == 1 and "already linked to another user" in again.stderr


def test_a_link_needs_a_configured_provider(database_url):
    refused = cli(
        database_url,
        *("users", "add", unique("u"), "--fhir-user", "Practitioner/1", "--external-subject", "someone"),
        FHIR_SERVER_OIDC_ISSUER="",
    )
    assert refused.returncode == 1 and "FHIR_SERVER_OIDC_ISSUER" in refused.stderr


def test_a_linked_user_may_also_keep_a_password(server, database_url):
    username = unique("both")
    added = cli(
        database_url,
        *("users", "add", username, "--fhir-user", "Practitioner/both", "--external-subject", unique("both")),
        *("--password-stdin",),
        stdin=PASSWORD + "\n",
        FHIR_SERVER_OIDC_ISSUER=ISSUER,
    )
    assert added.returncode == 0, added.stderr
    browser = Browser(server)
    try:
        assert browser.sign_in(username, PASSWORD).status_code == 200
    finally:
        browser.close()

"""Fixtures of the external-identity-provider tests: one provider and one of our servers registered there per
test module, a browser per test, and the relay disarmed around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from tests.auth.external_idp.flow import Ours, Provider, our_server
from tests.auth.external_idp.support import Relay, Sites
from tests.support.databases import fresh_database
from tests.support.server import ServerThread, free_port


@pytest.fixture(scope="module")
def provider(backend: str) -> Iterator[Provider]:
    with fresh_database(backend) as url:
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


@pytest.fixture(scope="module")
def ours(provider: Provider, database_url: str, backend: str) -> Iterator[Ours]:
    with our_server(provider, database_url, backend, by_cli=True) as running:
        yield running


@pytest.fixture
def sites() -> Iterator[Sites]:
    browser = Sites()
    yield browser
    browser.close()

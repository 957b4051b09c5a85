"""Access tokens for tests of the resource server: signed by the running app's own key store, exactly as its
authorization server (and ``fhir-server token``) signs them, so tests of access need not run a login flow."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fhir_server.config import Settings
from tests.support.server import RunningServer, ServerThread


@contextmanager
def auth_server(database_url: str, backend: str, **settings: Any) -> Iterator[RunningServer]:
    config = Settings(database_url=database_url, auth_required=True, _env_file=None, **settings)
    with ServerThread(config, backend) as running:
        yield running


def mint(server: RunningServer, scope: str, *, lifetime: int = 300, **claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": f"{server.root}/auth",
        "aud": server.fhir_base,
        "sub": "tester",
        "client_id": "test-client",
        "scope": scope,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + lifetime,
    }
    return server.app.state.keys.sign({**base, **claims})


def client_for(server: RunningServer, token: str | None) -> httpx.Client:
    headers = {"Accept": "application/fhir+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=server.fhir_base, timeout=30, headers=headers)

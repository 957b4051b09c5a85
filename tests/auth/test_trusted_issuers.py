"""Tokens of an EHR's authorization server (issue 6 point 2: "accepted when its issuer and JWKS are configured"):
the EHR is a second instance of this server in its own process; /fhir here accepts its tokens once
FHIR_SERVER_TRUSTED_ISSUERS names it (keys fetched from its JWKS over HTTP), with the same scope and compartment
rules, and refuses them — and tokens of any other issuer — otherwise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine

from fhir_server.auth.keys import KeyStore
from tests.support.databases import sqlite_database
from tests.support.process import ServerProcess, server_process
from tests.support.server import RunningServer
from tests.support.tokens import auth_server


@pytest.fixture(scope="module")
def ehr() -> Iterator[ServerProcess]:
    with sqlite_database() as url, server_process(url, FHIR_SERVER_AUTH_REQUIRED="true") as process:
        yield process


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr: ServerProcess) -> Iterator[RunningServer]:
    trusted = [{"issuer": f"{ehr.root}/auth", "jwks_uri": f"{ehr.root}/auth/jwks"}]
    with auth_server(database_url, backend, trusted_issuers=trusted) as running:
        yield running


def ehr_token(ehr: ServerProcess, audience: str, scope: str, **claims: str) -> str:
    """A token signed by the EHR's own key (as its authorization server signs them) for our FHIR base."""
    engine = create_engine(ehr.database_url)
    try:
        now = int(time.time())
        base = {"iss": f"{ehr.root}/auth", "aud": audience, "sub": "ehr-user", "client_id": "ehr-app",
                "scope": scope, "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300}  # fmt: skip
        return KeyStore(engine).sign({**base, **claims})
    finally:
        engine.dispose()


def _get(ours: RunningServer, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{ours.fhir_base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_trusted_ehrs_token_is_accepted_with_its_scopes(ours, ehr):
    patient = f"trusted-{uuid.uuid4().hex[:8]}"
    token = ehr_token(ehr, ours.fhir_base, "system/*.cruds")
    created = httpx.put(
        f"{ours.fhir_base}/Patient/{patient}",
        json={"resourceType": "Patient", "id": patient},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    confined = ehr_token(ehr, ours.fhir_base, "launch/patient patient/*.rs", patient="someone-else")
    assert _get(ours, f"/Patient/{patient}", confined).status_code == 404  # the same compartment rules


def test_a_token_for_another_audience_or_from_an_untrusted_issuer_is_refused(ours, ehr):
    wrong_audience = ehr_token(ehr, "https://elsewhere.example/fhir", "system/*.rs")
    assert _get(ours, "/Patient", wrong_audience).status_code == 401
    untrusted = ehr_token(ehr, ours.fhir_base, "system/*.rs", iss="https://not-configured.example/auth")
    answer = _get(ours, "/Patient", untrusted)
    assert answer.status_code == 401 and "does not trust" in answer.json()["issue"][0]["diagnostics"]

"""CORS on the FHIR API (issue 6 point 5; docs/security.md "CORS only for registered origins"): a browser SMART app at a
registered origin may call /fhir with its bearer token (preflight answered, ETag/Location readable); any other
origin gets no CORS headers, so the browser withholds the answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from fhir_server.auth import admin
from tests.support.server import RunningServer
from tests.support.tokens import auth_server, mint

APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def guarded(database_url: str, backend: str) -> Iterator[RunningServer]:
    with auth_server(database_url, backend) as running:
        admin.add_client(
            running.app.state.engine,
            name="browser app",
            kind="public",
            redirect_uris=[f"{APP_ORIGIN}/callback"],
            origins=[APP_ORIGIN],
            client_id=f"cors-{uuid.uuid4().hex[:8]}",
        )
        yield running


def test_preflight_and_response_for_a_registered_origin(guarded):
    preflight = httpx.options(
        f"{guarded.fhir_base}/Observation",
        headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert "If-Match" in preflight.headers["access-control-allow-headers"]
    answer = httpx.get(
        f"{guarded.fhir_base}/Patient",
        headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {mint(guarded, 'system/*.rs')}"},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "ETag" in answer.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in answer.headers


def test_other_origins_get_no_cors(guarded):
    answer = httpx.get(f"{guarded.fhir_base}/metadata", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        f"{guarded.fhir_base}/Patient",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers

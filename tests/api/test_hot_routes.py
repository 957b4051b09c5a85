"""The read by id and the type search are matched first (api/hot_routes.py), and that changes nothing else: every
other route under /fhir still gets its own paths, and a path outside FHIR's id syntax still gets the generic
route's answer.  Over real HTTP on both databases; the routing order itself on the app as built."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Match

from fhir_server.api import hot_routes
from fhir_server.app import create_app
from fhir_server.config import Settings
from tests.api.fhir import assert_outcome, patient, post


def _diagnostics(response: httpx.Response, status: int, code: str) -> str:
    return assert_outcome(response, status, code)["issue"][0]["diagnostics"]


def _first_full_match(app, method: str, path: str):
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    for route in app.router.routes:
        match, _ = route.matches(dict(scope))
        if match == Match.FULL:
            return route
    return None


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    built = create_app(Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('hot')}/db.sqlite", _env_file=None))
    yield built
    built.state.read_engine.dispose()
    built.state.engine.dispose()


@pytest.mark.parametrize("path", ["/fhir/Patient/abc-123.x", "/fhir/Observation"])
def test_the_hot_routes_are_the_first_candidates(app, path):
    first = app.router.routes[0]
    assert getattr(first, "original_router", None) is hot_routes.router
    assert _first_full_match(app, "GET", path) is first


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/metadata",
        "/fhir/_history",
        "/fhir/Patient/_history",
        "/fhir/Patient/$export",
        "/fhir/Questionnaire/$populate",
        "/fhir/.well-known/smart-configuration",
        "/fhir/_export/some-job",
        "/fhir/Patient/bad_id",  # outside FHIR's id syntax: the generic route, which says so
        "/fhir/patient/abc",  # not a type's spelling: the generic route, which says so
    ],
)
def test_no_other_path_is_taken_by_a_hot_route(app, path):
    first = app.router.routes[0]
    assert _first_full_match(app, "GET", path) is not first


def test_read_and_search_answer_through_the_hot_routes(client, uid):
    created = post(client, "/Patient", patient(uid)).json()
    read = client.get(f"/Patient/{created['id']}")
    assert read.status_code == 200 and read.json()["id"] == created["id"]
    assert read.headers["etag"] == 'W/"1"'
    found = client.get("/Patient", params={"identifier": f"urn:test|{uid}"})
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created["id"]]


def test_paths_outside_the_hot_routes_keep_their_answers(client, server):
    assert "Invalid id 'bad_id!'" in _diagnostics(client.get("/Patient/bad_id!"), 400, "value")
    assert _diagnostics(client.get("/patient/abc"), 404, "not-supported") == "Resource type 'patient' is not supported"
    assert _diagnostics(client.get("/patient"), 404, "not-supported") == "Resource type 'patient' is not supported"
    assert client.get("/metadata").json()["resourceType"] == "CapabilityStatement"
    discovery = httpx.get(f"{server.fhir_base}/.well-known/smart-configuration")
    assert discovery.status_code == 200 and "token_endpoint" in discovery.json()
    history = client.get("/Patient/_history")
    assert history.status_code == 200 and history.json()["type"] == "history"

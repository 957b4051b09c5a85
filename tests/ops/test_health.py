"""Health checks and metrics (fhir_server/web/health_routes.py): /healthz, /readyz, /metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.store.migrate import alembic_config, upgrade
from tests.support.databases import fresh_database, postgres_admin_url

LOOPBACK = ("127.0.0.1", 50000)


@contextmanager
def app_client(settings: Settings, client: tuple[str, int] = LOOPBACK) -> Iterator[TestClient]:
    """The app without its lifespan (no start-up check, no workers): enough for these routes."""
    app = create_app(settings)
    try:
        yield TestClient(app, client=client)
    finally:
        app.state.read_engine.dispose()
        app.state.engine.dispose()


def settings_for(url: str, **values: object) -> Settings:
    return Settings(database_url=url, load_library=False, _env_file=None, **values)


def test_healthz_passes(server):
    answer = httpx.get(f"{server.root}/healthz")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/health+json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {"status": "pass"}


def test_readyz_passes_on_a_ready_server(server):
    answer = httpx.get(f"{server.root}/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/health+json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["status"] == "pass"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "pass",
        "migrations": "pass",
        "secret_key": "pass",
    }


def test_readyz_needs_no_token_when_authorization_is_on(database_url):
    with app_client(settings_for(database_url, auth_required=True)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)  # answered, not 401: not ready without the lifespan
        assert client.get("/fhir/Patient").status_code == 401  # the API still is protected


def test_readyz_names_the_database_when_it_does_not_answer(backend):
    missing = f"fhir_missing_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        url = f"sqlite:////nonexistent-{missing}/fhir.db"  # a folder that does not exist: the file cannot open
    else:
        base, _, _ = (postgres_admin_url() or "").rpartition("/")
        url = f"{base}/{missing}"  # a database that does not exist
    with app_client(settings_for(url)) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["status"] == "fail"
    assert "database" in body["output"]
    assert missing not in answer.text  # no URL, no exception text
    assert "127.0.0.1" not in answer.text


def test_readyz_names_the_migrations_when_the_schema_is_behind(backend):
    with fresh_database(backend) as url:
        script = ScriptDirectory.from_config(alembic_config(url))
        previous = script.get_revision("head").down_revision
        assert isinstance(previous, str)
        upgrade(url, previous)
        with app_client(settings_for(url)) as client:
            answer = client.get("/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["checks"]["database"]["status"] == "pass"
        assert body["checks"]["migrations"]["status"] == "fail"
        assert "migrations" in body["output"]


def _scrape(server) -> str:
    answer = httpx.get(f"{server.root}/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["cache-control"] == "no-store"
    return answer.text


def test_metrics_count_route_templates_never_ids_or_queries(server, client, uid):
    patient = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Metric{uid}"}]})
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    assert client.get(f"/Patient/{patient_id}").status_code == 200
    assert client.get("/Observation", params={"patient": f"Patient/{patient_id}", "code": uid}).status_code == 200
    assert client.get(f"/Patient/{uid}-missing").status_code == 404
    assert httpx.get(f"{server.root}/no-such-{uid}").status_code == 404

    text = _scrape(server)
    read = 'fhir_server_http_requests_total{method="GET",route="/fhir/{resource_type}/{resource_id}",status="2xx"}'
    assert read in text
    assert 'method="GET",route="/fhir/{resource_type}",status="2xx"' in text
    assert 'duration_seconds_bucket{le="0.005",route="/fhir/{resource_type}/{resource_id}"}' in text
    assert 'method="GET",route="/fhir/{resource_type}/{resource_id}",status="4xx"' in text
    assert 'method="GET",route="unmatched",status="4xx"' in text
    assert patient_id not in text
    assert uid not in text
    assert "patient=" not in text and "?" not in text.replace("# HELP", "")
    assert "fhir_server_ehr_outbox_pending " in text
    assert "fhir_server_ehr_outbox_oldest_pending_age_seconds " in text
    assert "fhir_server_message_outbox_pending " in text
    assert "fhir_server_message_outbox_oldest_pending_age_seconds " in text
    assert "fhir_server_metrics_database_up 1.0" in text
    assert 'fhir_server_db_pool_connections_in_use{pool="write"}' in text


def test_metrics_count_each_request_once(server):
    def reads(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('fhir_server_http_requests_total{method="GET",route="/healthz",status="2xx"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = reads(_scrape(server))
    for _ in range(3):
        assert httpx.get(f"{server.root}/healthz").status_code == 200
    assert reads(_scrape(server)) == before + 3


def test_metrics_off_answers_404(database_url):
    with app_client(settings_for(database_url, metrics="off")) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 404
    assert "fhir_server" not in answer.text


@pytest.mark.parametrize(("peer", "allowed"), [("127.0.0.1", True), ("::1", True), ("203.0.113.7", False)])
def test_metrics_loopback_only_by_default(database_url, peer, allowed):
    with app_client(settings_for(database_url), client=(peer, 50000)) as client:
        answer = client.get("/metrics")
    assert (answer.status_code == 200) is allowed
    if not allowed:
        assert answer.status_code == 403
        assert "fhir_server" not in answer.text


def test_metrics_open_allows_any_client(database_url):
    with app_client(settings_for(database_url, metrics="open"), client=("203.0.113.7", 50000)) as client:
        assert client.get("/metrics").status_code == 200


def test_metrics_token_is_required_when_configured(database_url):
    with app_client(settings_for(database_url, metrics_token="s3cret-metrics-token")) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "fhir_server_http_requests_total" in right.text

"""Fixtures for the write-back tests (issue 7, point 4).

- ``ehr``: the EHR, a second instance of this server in its own process with its own SQLite database and
  authorization required; our server is registered there as a Backend Services client whose keys the EHR fetches
  from our /auth/jwks (``fhir-server clients add --jwks-url``).
- ``ours``: our server in its own process on the test database (SQLite or PostgreSQL), delivering with short
  backoff settings; tests restart or kill it.
- ``local``: an app object on the same database, for submissions (the QuestionnaireResponse, its scoring and the
  outbox row in one ``repo.write``, as the form submission does) and for reading the outbox.  It runs no worker.
- ``proxy`` and ``registration``: per test, a fault proxy in front of the EHR and an EHR registration pointing at
  it, so rows a test leaves behind never reach the next test's proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.ehr import registry
from tests.ehr.harness import OUR_SETTINGS, EhrProcess, FaultProxy, ServerProcess, temp_folder
from tests.ehr.world import srs_ehr

BACKEND_SCOPE = " ".join(f"system/{t}.crus" for t in registry.DEFAULT_RESOURCE_TYPES)


@pytest.fixture(scope="session")
def ehr_folder() -> Iterator[Path]:
    with temp_folder() as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def ehr(ehr_folder: Path) -> Iterator[EhrProcess]:
    with srs_ehr(ehr_folder) as process:
        yield process


@pytest.fixture(scope="session")
def ours(database_url: str, backend: str, ehr: EhrProcess, ehr_folder: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, ehr_folder, f"ours-{backend}", OUR_SETTINGS)
    server.start()
    try:
        ehr.register_backend_client(f"fit-outbox-{backend}", f"{server.root}/auth/jwks", BACKEND_SCOPE)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local(database_url: str, ours: ServerProcess) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=database_url, auth_required=False, outbox_worker=False, _env_file=None))
    yield app
    app.state.read_engine.dispose()
    app.state.engine.dispose()


@pytest.fixture
def proxy(ehr: EhrProcess, ehr_folder: Path) -> Iterator[FaultProxy]:
    running = FaultProxy(ehr.root, ehr_folder)
    yield running
    running.stop()


@pytest.fixture
def registration(local: FastAPI, proxy: FaultProxy, backend: str) -> registry.EhrRegistration:
    return registry.register(
        local.state.engine,
        issuer=proxy.fhir_base,
        client_id="fit-app",
        backend_client_id=f"fit-outbox-{backend}",
        name=f"EHR behind proxy {proxy.port}",
    )

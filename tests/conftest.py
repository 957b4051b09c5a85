"""Shared fixtures.  Every API test runs twice: on SQLite (the embedded default) and on PostgreSQL.

PostgreSQL comes from FHIR_SERVER_TEST_POSTGRES_URL (CI sets it).  Without it the PostgreSQL half is skipped and
the run says so at the end; with it set but unreachable, the tests fail rather than skip.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.store.crypto import generate_key
from tests.support.databases import POSTGRES_ENV, postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import auth_server

BACKENDS = ["sqlite", "postgresql"]

# Tests that are not about access run without authorization (servers started as processes inherit this too);
# tests/auth turns it on explicitly with Settings(auth_required=True).
os.environ.setdefault("FHIR_SERVER_AUTH_REQUIRED", "false")
# Nor do they deliver EHR write-back: tests/ehr starts its own server process with the worker on, and a second
# worker in this process on the same database would take some of its rows.
os.environ.setdefault("FHIR_SERVER_OUTBOX_WORKER", "false")
# Nor do they run Bulk Data exports: tests/export starts its servers with the export worker on, and a worker in
# another server on the same database would take their jobs (with its own export folder).
os.environ.setdefault("FHIR_SERVER_EXPORT_WORKER", "false")
# Nor do they send subscription notifications: tests/subscriptions starts its servers with the worker on.
os.environ.setdefault("FHIR_SERVER_SUBSCRIPTION_WORKER", "false")
# Nor do they send email and SMS: tests/messaging runs its own workers, tests/outreach its own server processes.
os.environ.setdefault("FHIR_SERVER_MESSAGE_WORKER", "false")
# Nor do they sweep expired requests: tests/measure_tasks calls the sweep itself, tests/outreach runs the worker.
os.environ.setdefault("FHIR_SERVER_TASK_EXPIRY_WORKER", "false")
# Nor do they sweep old AuditEvents away: tests/erasure runs the retention itself.
os.environ.setdefault("FHIR_SERVER_AUDIT_RETENTION_WORKER", "false")
# Their receivers listen on loopback, which a server refuses as an endpoint unless told otherwise.
os.environ.setdefault("FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS", "true")
os.environ.setdefault("FHIR_SERVER_EXPORT_DIR", os.path.join(tempfile.gettempdir(), f"fhir-test-exports-{os.getpid()}"))
# Stored secrets are encrypted (store/crypto.py): every server and command of the run uses this key, a new one per
# run (each pytest-xdist worker has its own databases); processes started by tests get it from process.environment.
os.environ.setdefault("FHIR_SERVER_SECRET_KEY", generate_key())


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and postgres_admin_url() is None:
        pytest.skip(f"PostgreSQL half skipped: {POSTGRES_ENV} is not set")
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with sqlite_database() as url:
            yield url
    else:
        with postgres_database(postgres_admin_url() or "") as url:
            yield url


@pytest.fixture(scope="session")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_url, max_body_bytes=256 * 1024, _env_file=None)
    with ServerThread(settings, backend) as running:
        yield running


@pytest.fixture(scope="module")
def guarded(database_url: str, backend: str) -> Iterator[RunningServer]:
    """A server with authorization on, one per test module (tokens: tests/support/tokens.py ``mint``)."""
    with auth_server(database_url, backend) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.fhir_base, timeout=30, headers={"Accept": "application/fhir+json"}) as c:
        yield c


@pytest.fixture
def uid() -> str:
    """A unique token for identifiers and names, so tests sharing a database never see each other's data."""
    return uuid.uuid4().hex[:16]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if postgres_admin_url() is None:
        terminalreporter.write_line(
            f"NOTE: the PostgreSQL half of the suite was SKIPPED ({POSTGRES_ENV} is not set); only SQLite was tested.",
            yellow=True,
            bold=True,
        )

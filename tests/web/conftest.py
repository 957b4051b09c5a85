"""Browser tests of the rating form: Playwright driving Debian's Chromium against a real server (uvicorn on a
loopback port) on SQLite and on PostgreSQL.

Never downloads a browser: Chromium comes from the distribution (``apt-get install chromium``; ``.ci/run``
installs it), and axe-core from ``tests/web/node_modules`` (``npm ci`` in tests/web, run by ``make test`` and CI).
Without Chromium (or axe-core) the browser tests skip locally, saying why; under CI (``CI`` set) they fail instead,
because CI always installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4

import httpx
import pytest

from fhir_server.config import Settings
from tests.support.server import RunningServer, ServerThread
from tests.web.ehr_page import ehr_page_server

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = shutil.which("chromium")
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 360, "height": 740}
TABLET = {"width": 1024, "height": 768}


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        unavailable("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def ehr_port() -> Iterator[int]:
    with ehr_page_server() as port:
        yield port


@pytest.fixture(scope="session")
def ehr_origin(ehr_port: int) -> str:
    return f"http://localhost:{ehr_port}"


@pytest.fixture(scope="session")
def form_server(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    settings = Settings(
        database_url=database_url,
        app_dev_sessions=True,
        frame_ancestors=[ehr_origin],
        auth_required=False,
        _env_file=None,
    )
    with ServerThread(settings, backend) as running:
        yield running


@pytest.fixture
def fhir(form_server: RunningServer) -> Iterator[httpx.Client]:
    """The same server's FHIR API (authorization off): where the tests look for what a submission wrote."""
    with httpx.Client(base_url=form_server.fhir_base, timeout=30) as client:
        yield client


@pytest.fixture
def patient() -> str:
    return f"web-{uuid4().hex[:12]}"


@pytest.fixture
def context(browser: object) -> Iterator[object]:
    ctx = browser.new_context(viewport=TABLET)  # type: ignore[attr-defined]
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: object) -> object:
    return context.new_page()  # type: ignore[attr-defined]


@pytest.fixture
def open_form(form_server: RunningServer, ehr_origin: str):
    """Open a form session for (patient, measure) in ``page`` the way the EHR stand-in does, top-level."""

    def open_(page: object, patient: str, measure: str, encounter: str | None = None) -> None:
        params = {"app": form_server.root, "patient": patient, "measure": measure}
        if encounter:
            params["encounter"] = encounter
        page.goto(f"{ehr_origin}/launch?{urlencode(params)}")  # type: ignore[attr-defined]
        page.wait_for_url(f"{form_server.root}/app/form")  # type: ignore[attr-defined]
        page.wait_for_load_state("load")  # type: ignore[attr-defined]

    return open_


def search(fhir: httpx.Client, resource_type: str, **params: str) -> list[dict]:
    answer = fhir.get(f"/{resource_type}", params={"_count": "100", **params})
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]

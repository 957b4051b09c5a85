"""The sandbox sends a demo client a form link and shows the message (issue 22, point 4): from /sandbox, one click
sends the SRS to Alex by email; the message appears in /sandbox/mailbox; its link, opened in Chromium, asks for
Alex's year of birth and opens the form."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.config import Settings
from fhir_server.smart.sandbox import PATIENTS
from tests.outreach.world import until
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread
from tests.web.conftest import PHONE

ALEX = next(p for p in PATIENTS if p.id == "sandbox-alex")


@pytest.fixture(scope="module")
def sandbox(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    mailbox = tmp_path_factory.mktemp(f"sandbox-mailbox-{backend}")
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url:
        settings = Settings(
            database_url=url,
            auth_required=True,
            sandbox=True,
            sandbox_mailbox=str(mailbox),
            smtp_url="",
            sms_gateway_url="",
            message_worker=True,
            message_poll_seconds=0.2,
            _env_file=None,
        )
        with ServerThread(settings, backend) as running:
            yield running, mailbox


def test_the_sandbox_sends_a_link_and_its_mailbox_opens_it(sandbox, browser) -> None:
    server, mailbox = sandbox
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"{server.root}/sandbox", timeout=60_000)  # the first visit writes the demo practice
        page.get_by_role("button", name=f"Send a SRS link to {ALEX.name}").click()
        page.wait_for_url(f"{server.root}/sandbox/mailbox")
        until(lambda: list(mailbox.glob("*.eml")), "the captured message")
        page.reload()
        page.locator("table.sandbox a").first.click()
        link = page.locator('a[href*="/app/l/"]')
        assert link.count() == 1 and link.get_attribute("href").startswith(f"{server.root}/app/l/")
        link.click()
        page.get_by_label("Your year of birth").fill(ALEX.birth_date[:4])
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{server.root}/app/form")
        assert page.locator('[data-link-id="relationship"] [role="slider"]').count() == 1
    finally:
        context.close()

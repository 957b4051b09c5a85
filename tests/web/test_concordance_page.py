"""The therapist's own concordance page in Chromium (issue 21, point 4), on SQLite and PostgreSQL: reached from the
clinician view with the launch's session, it shows the signed-in clinician's gaps across all their clients by month
and nobody else's (a colleague's ratings of the same client are not counted, and no client is named); a session
without a clinician signed in gets a page saying so; axe-clean and inside an 800 px EHR iframe."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from fhir_server.smart.sessions import COOKIE_NAME
from fhir_server.supervision.charts import month_label
from tests.support.server import RunningServer
from tests.web.conftest import AXE, unavailable
from tests.web.ehr_page import FRAME_WIDTH
from tests.web.test_accessibility import axe_violations
from tests.web.therapist_world import Client, ago, clinician, launch_url, launched, serving, sign_in


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    with serving(database_url, backend, ehr_origin) as running:
        yield running


def _practice(ours: RunningServer) -> tuple[str, Client, Client]:
    """A clinician with two clients, three sessions rated by both this month (+2.0, +6.0, -1.0); a colleague who
    rated a session of one of them far higher (+18.0: not theirs to see)."""
    me, colleague = clinician(ours), clinician(ours)
    first, second = Client(ours, me), Client(ours, me)
    first.session("one", (90,) * 4, (95,) * 4, ago(minutes=90))  # 36.0 and 38.0
    second.session("two", (80,) * 4, (95,) * 4, ago(minutes=80))  # 32.0 and 38.0: over the margin, a Flag
    first.session("three", (90,) * 4, (88, 88, 87, 87), ago(minutes=70))  # 36.0 and 35.0
    first.therapist = colleague
    first.session("covering", (50,) * 4, (95,) * 4, ago(minutes=60))
    return me, first, second


def test_only_the_signed_in_clinicians_own_gaps(browser, ours):
    me, first, second = _practice(ours)
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        launched(page, ours, me, first.id, r".*/app/clinician$", view="clinician")
        page.locator('a[href="/app/concordance"]').click()
        page.wait_for_url(re.compile(r".*/app/concordance$"))
        summary = page.locator("p.summary").inner_text()
        assert "3 sessions rated by both you and your client" in summary
        assert "2.3 points above" in summary and "1 of 3 (33 %)" in summary
        assert "at least 4 points higher in total, or 2 points higher on one line" in summary
        month = month_label(datetime.now(UTC).strftime("%Y-%m"))
        row = page.locator("table.months tbody tr").first.locator("td").all_inner_texts()
        assert row == [month, "3", "+2.3", "1 (33 %)"]
        assert page.locator("svg.gap-months rect.month").count() == 1
        html = page.content()
        assert "18.0" not in html and "+8.0" not in html  # the colleague's gap, nor a mean with it
        assert first.id not in html and second.id not in html and "Kim Example" not in html
    finally:
        context.close()


def test_without_a_clinician_signed_in_or_a_session(browser, ours):
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(f"{ours.root}/app/concordance")
        assert answer.status == 403 and "not open" in page.locator("h1").inner_text()
        # a launch whose EHR named no user (no fhirUser): the session the callback would have stored
        session_id, _ = ours.app.state.app_sessions.create_session(access_token="an-ehr-token", patient="p-1")
        context.add_cookies([{"name": COOKIE_NAME, "value": session_id, "domain": "127.0.0.1", "path": "/",
                              "secure": True, "httpOnly": True, "sameSite": "None"}])  # fmt: skip
        answer = page.goto(f"{ours.root}/app/concordance")
        assert answer.status == 403 and page.locator("h1").inner_text() == "Who is signed in?"
    finally:
        context.close()


def test_axe_clean_and_inside_an_800_px_ehr_iframe(browser, ours, ehr_origin):
    if not AXE.exists():
        unavailable("axe-core is not installed (npm ci in tests/web; make test does it)")
    me, first, _ = _practice(ours)
    context = browser.new_context(viewport={"width": 800, "height": 900}, bypass_csp=True)
    try:
        page = context.new_page()
        launched(page, ours, me, first.id, r".*/app/clinician$", view="clinician")
        page.goto(f"{ours.root}/app/concordance")
        assert axe_violations(page) == []
    finally:
        context.close()
    context = browser.new_context(viewport={"width": 800, "height": 900}, bypass_csp=True)
    try:  # the page of a clinician with no paired session yet
        page = context.new_page()
        launched(page, ours, clinician(ours), first.id, r".*/app/clinician$", view="clinician")
        page.goto(f"{ours.root}/app/concordance")
        assert "No session rated by both" in page.locator("p.summary").inner_text()
        assert axe_violations(page) == []
    finally:
        context.close()
    launch = launch_url(ours, me, first.id, view="clinician").removeprefix(ours.root)
    context = browser.new_context(viewport={"width": 1000, "height": 1250})
    try:
        page = context.new_page()
        page.goto(f"{ehr_origin}/embed?app={quote(ours.root)}&path={quote(launch)}")
        frame = page.frame(name="app")
        frame.wait_for_url(re.compile(r".*/auth/login.*"))
        sign_in(frame, me)
        frame.wait_for_url(re.compile(r".*/app/clinician$"))
        frame.locator('a[href="/app/concordance"]').click()
        frame.wait_for_url(re.compile(r".*/app/concordance$"))
        width = frame.evaluate("document.documentElement.clientWidth")
        assert width <= FRAME_WIDTH and frame.evaluate("document.documentElement.scrollWidth") <= width
        assert frame.locator("svg.gap-months").bounding_box()["width"] <= FRAME_WIDTH
    finally:
        context.close()

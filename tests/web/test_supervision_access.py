"""Who sees what on the supervision page (issue 20, points 4 and 5), through the real SMART launch: the page reports
as the signed-in user, whose token this server verifies and whose supervised organisations reporting/access.py
reads.  A supervisor of program A sees nothing of program B (page and CSV), and asking for B is a refusal page; a
user who supervises nothing, no launch at all, and a launch whose token is an external EHR's get a page saying
why; every run is audited; an expired access token is refreshed.  World: tests/web/supervision_world.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.smart.sessions import COOKIE_NAME
from tests.reporting.practice import Practice
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint
from tests.web.supervision_world import (
    PERIOD,
    csv_of,
    opened,
    practising,
    serving,
    supervisor,
)


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    with serving(database_url, backend, ehr_origin) as running:
        yield running


@pytest.fixture(scope="module")
def practice(ours: RunningServer) -> Iterator[Practice]:
    with practising(ours) as built:
        yield built


def test_a_supervisor_of_program_a_sees_nothing_of_program_b(browser, ours, practice):
    name, _ = supervisor(ours, [practice.program_a])
    with opened(browser, ours, name, PERIOD) as page:  # no scope: everything they supervise, which is A
        html = page.content()
        text, rows = csv_of(page, ours, PERIOD)
        options = page.locator("#scope option").all_inner_texts()
        assert page.locator("table.programs thead th").all_inner_texts()[1:] == ["Adults"]
        assert page.locator("table.clinicians").count() == 1  # one program supervised: its clinicians too
        refused = page.goto(f"{page.url.split('?')[0]}?from=2026-01&to=2026-06&scope={practice.program_b}")
        assert refused is not None and refused.status == 403
        assert "not among the organisations you supervise" in page.locator("main").inner_text()
        parent = page.request.get(f"{ours.root}/app/supervision.csv?from=2026-01&scope={practice.org}")
        assert parent.status == 403 and parent.headers["content-type"].startswith("text/html")  # no CSV of it
    assert options == ["Everything you supervise", "Adults"]
    for of_b in (practice.program_b, practice.cb, "Youth", practice.org):
        assert of_b not in html and of_b not in text, of_b
    assert {r["stratum"] for r in rows if r["breakdown"] == "program"} == {practice.program_a}


def test_who_supervises_nothing_gets_a_refusal_page(browser, ours, practice):
    name, _ = supervisor(ours, [])
    with opened(browser, ours, name, ehr_launch=False) as page:
        assert page.locator("h1").inner_text() == "No reports for you here"
        assert "--supervises" in page.locator("main").inner_text()  # what an administrator does about it
        assert page.locator("table, svg").count() == 0


def test_without_a_launch_there_is_no_page(ours):
    answer = httpx.get(f"{ours.root}/app/supervision", timeout=30)
    assert answer.status_code == 403 and "not open" in answer.text
    assert httpx.get(f"{ours.root}/app/supervision.csv", timeout=30).status_code == 403


def _session_with(ours, token: str, fhir_user: str) -> str:
    """An app session as a launch from an external EHR leaves it: that EHR's token and user."""
    sessions = ours.app.state.app_sessions
    session_id, session = sessions.create_session(app_view="supervision", launch_iss="https://ehr.example/fhir")
    sessions.update(session, access_token=token, fhir_user=fhir_user, scope="launch user/MeasureReport.r openid")
    return session_id


def test_a_launch_from_an_external_ehr_is_refused_with_a_page(ours, practice):
    """The EHR's user is the EHR's: not matched to one of ours, not even by a ``sub`` equal to a supervisor's."""
    _, user_id = supervisor(ours, [practice.org])
    key = RSAKey.generate_key(2048, parameters={"kid": "ehr-key", "alg": "RS256"}, private=True)
    now = int(time.time())
    claims = {"iss": "https://ehr.example/auth", "aud": "https://ehr.example/fhir", "sub": user_id, "iat": now,
              "exp": now + 300, "scope": "user/MeasureReport.r", "fhirUser": "Practitioner/1"}  # fmt: skip
    signed = jwt.encode({"alg": "RS256", "kid": "ehr-key"}, claims, key, algorithms=["RS256"])
    for token in (signed, "an-opaque-ehr-token"):
        session_id = _session_with(ours, token, "https://ehr.example/fhir/Practitioner/1")
        cookies = {"Cookie": f"{COOKIE_NAME}={session_id}"}
        for path in ("/app/supervision", "/app/supervision.csv"):
            answer = httpx.get(f"{ours.root}{path}", headers=cookies, timeout=30)
            assert answer.status_code == 403 and "Open the supervision page from this server" in answer.text


def test_every_run_is_audited_and_so_is_a_refusal(browser, ours, practice):
    name, _ = supervisor(ours, [practice.org])
    marker = f"for {practice.org}"
    with opened(browser, ours, name, {**PERIOD, "scope": practice.org}) as page:
        page.goto(f"{page.url.split('?')[0]}?scope=Organization/not-{uuid.uuid4().hex[:8]}")
    deadline, events = time.monotonic() + 10, []
    with client_for(ours, mint(ours, "system/AuditEvent.rs")) as c:
        while time.monotonic() < deadline:  # the audit trail is written beside the request, not in it
            found = c.get("/AuditEvent", params={"_count": "200", "_sort": "-date"}).json().get("entry", [])
            events = [str(e["resource"]) for e in found if f"Practitioner/{name}" in str(e["resource"])]
            if any(marker in e for e in events) and any("supervision page refused" in e for e in events):
                break
            time.sleep(0.2)
    assert any("supervision page: $evaluate-measure" in e and marker in e for e in events), events
    assert any("supervision page refused" in e for e in events), events
    assert f"{practice.uid}-a1" not in " ".join(events)  # the reports' audit names no client


def test_an_expired_access_token_is_refreshed(browser, ours, practice):
    """The page outlives the access token's five minutes: the session's refresh token (online_access) gets a new
    one, once, and the old one is never accepted again."""
    name, user_id = supervisor(ours, [practice.org])
    sessions = ours.app.state.app_sessions
    with opened(browser, ours, name, PERIOD) as page:
        cookie = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE_NAME)
        session = sessions.load_session(cookie)
        assert session is not None and session.refresh_token and "online_access" in (session.scope or "")
        expired = mint(ours, session.scope or "", lifetime=-120, sub=user_id, fhirUser=f"Practitioner/{name}")
        sessions.update(session, access_token=expired)
        again = page.reload()
        assert again is not None and again.status == 200
        assert page.locator("svg.months").count() >= 9
        refreshed = sessions.load_session(cookie)
    assert refreshed is not None and refreshed.access_token not in (expired, session.access_token)
    assert refreshed.refresh_token != session.refresh_token  # rotated

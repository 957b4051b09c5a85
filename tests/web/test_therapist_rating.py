"""The therapist's rating in Chromium (issue 21, points 2 and 4), on SQLite and PostgreSQL: blind by default — today's
SRS is in no page, no answer and no request of the clinician view or the result page until the therapist has rated
the session; the therapist's form opened from the view (and from the result page after the hand-back) and sent,
after which the view shows everything, with the therapist's line beside the client's on the chart; the EHR's own
launch of the form (``view=therapist-rating``) and what it refuses; every new page axe-clean and inside an 800 px
EHR iframe."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.server import RunningServer
from tests.web.conftest import AXE, unavailable
from tests.web.ehr_page import FRAME_WIDTH
from tests.web.form_driver import keys
from tests.web.test_accessibility import axe_violations
from tests.web.therapist_world import (
    LINES,
    Client,
    Recorder,
    ago,
    clinician,
    launch_url,
    launched,
    mark,
    serving,
    sign_in,
)

TODAY_MARKS = (71, 64, 81, 57)  # 7.1 + 6.4 + 8.1 + 5.7 = 27.3, below the cutoff: it raises a concern quoting it
TODAY = "27.3"
HIDDEN = (TODAY, "7.1", "8.1", "5.7")  # the total and three items, numbers nothing else on these pages says
PROMPT = "Before you see today's rating: how do you think it went for your client?"


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    with serving(database_url, backend, ehr_origin) as running:
        yield running


def _with_today(ours: RunningServer) -> tuple[str, Client, str]:
    """A clinician, their client with two sessions rated by both, and today's SRS (its session not yet rated by
    the therapist): (clinician, client, today's Encounter)."""
    therapist = clinician(ours)
    client = Client(ours, therapist)
    client.session("week-1", (90, 90, 90, 90), (95, 95, 95, 95), ago(days=14))  # 36.0 and 38.0: gap +2.0
    client.session("week-2", (85, 85, 85, 85), (90, 92, 90, 88), ago(days=7))  # 34.0 and 36.0
    today = client.session("today", TODAY_MARKS, None, ago(minutes=40))
    return therapist, client, today


def _rate(page, tens: int = 8) -> None:
    """The therapist marks each line at ``tens`` x 10 mm and sends."""
    page.wait_for_url(re.compile(r".*/app/form$"))
    assert "Therapist's rating of the session" in page.locator("h1").inner_text()
    for line in LINES:
        mark(page, line, tens)
    page.locator("button.submit").click()


def test_blind_until_the_therapist_rated_then_everything(browser, ours):
    therapist, client, today = _with_today(ours)
    context = browser.new_context(viewport={"width": 800, "height": 900})
    recorder = Recorder(context, ours.root)
    try:
        page = context.new_page()
        launched(page, ours, therapist, client.id, r".*/app/clinician$", view="clinician")
        assert PROMPT in page.locator("section.rate-first").inner_text()
        assert recorder.answered("/app/clinician") and recorder.answered("/app/static/clinician.css")
        for value in HIDDEN:
            assert recorder.carrying(value) == [], f"{value} reached the browser before the therapist rated"
        assert page.locator("svg.trend g.series-srs g.point").count() == 2  # the two earlier sessions only

        page.locator("button.rate").click()  # "Rate the session"
        _rate(page)
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        assert page.locator("section.rate-first").count() == 0
        assert recorder.carrying(TODAY) and recorder.carrying("8.1")  # the recorder sees them once they are there
        values = [page.locator("svg.trend g.series-srs g.point").nth(i).get_attribute("data-value") for i in range(3)]
        assert values == ["36.0", "34.0", TODAY]
        # the two lines: the therapist's beside the client's, a point per session both rated, and each gap
        theirs = page.locator("svg.trend g.series-therapist g.point")
        assert [theirs.nth(i).get_attribute("data-value") for i in range(3)] == ["38.0", "36.0", "32.0"]
        gaps = page.locator("svg.trend g.gap")
        assert [gaps.nth(i).get_attribute("data-gap") for i in range(3)] == ["+2.0", "+2.0", "+4.7"]
        assert page.locator("svg.trend polyline").count() == 2  # no ORS here: the client's line and the therapist's
        rows = page.locator("table.concordance tbody tr")
        assert rows.count() == 3 and rows.first.locator("td").all_inner_texts()[1:] == [TODAY, "32.0", "+4.7"]
        assert "Purple diamonds: the therapist's rating" in page.locator("figcaption").inner_text()
    finally:
        context.close()
    [rated] = client.search("QuestionnaireResponse", questionnaire="http://fit-fhir.org/fhir/Questionnaire/srs-therapist",
                            encounter=f"Encounter/{today}")  # fmt: skip
    assert rated["author"] == rated["source"] == {"reference": f"Practitioner/{therapist}"}
    [gap] = client.search("Observation", code="srs-gap-total", encounter=f"Encounter/{today}")
    assert gap["valueQuantity"]["value"] == 4.7 and gap["performer"] == [{"reference": f"Practitioner/{therapist}"}]


def test_the_result_page_after_the_hand_back_offers_the_therapists_form(browser, ours):
    therapist = clinician(ours)
    client = Client(ours, therapist)
    encounter = client.encounter("today")
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        launched(page, ours, therapist, client.id, r".*/app/form$", encounter, measure="srs")
        for line, tens in zip(LINES, (7, 6, 8, 5), strict=True):
            mark(page, line, tens)
        keys(page, "goals", *["ArrowRight"] * 4)  # 64: total 7 + 6.4 + 8 + 5 = 26.4
        page.locator("button.submit").click()
        page.locator(".thanks").wait_for()
        recorder = Recorder(context, ours.root)  # from the hand-back on: what the therapist's screen gets
        page.locator("a.clinician-link").click()
        page.wait_for_url(re.compile(r".*/app/result$"))
        assert PROMPT in page.locator("main").inner_text()
        assert page.locator(".result-score").count() == 0 and "No concern" not in page.locator("main").inner_text()
        assert recorder.carrying("26.4") == []
        page.locator("button.rate").click()
        _rate(page, 9)
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        assert "26.4" in page.content()
    finally:
        context.close()
    [gap] = client.search("Observation", code="srs-gap-total", encounter=f"Encounter/{encounter}")
    assert gap["valueQuantity"]["value"] == 9.6  # 36.0 - 26.4


def test_the_ehr_launches_the_therapists_form(browser, ours):
    therapist = clinician(ours)
    client = Client(ours, therapist)
    encounter = client.encounter("today")
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        launched(page, ours, therapist, client.id, r".*/app/form$", encounter, view="therapist-rating")
        _rate(page, 7)
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        page.goto(f"{ours.root}/app/form")  # a reload after sending: the view again, never a second form
        page.wait_for_url(re.compile(r".*/app/clinician$"))
    finally:
        context.close()
    [rated] = client.search("QuestionnaireResponse", encounter=f"Encounter/{encounter}")
    assert rated["questionnaire"].startswith("http://fit-fhir.org/fhir/Questionnaire/srs-therapist|")
    assert rated["author"] == {"reference": f"Practitioner/{therapist}"}


@pytest.mark.parametrize(
    ("params", "encounter", "title"),
    [
        ({"view": "therapist-rating"}, False, "No session to rate"),  # the launch named no Encounter
        ({"view": "therapist-rating", "measure": "srs"}, True, "Not a therapist's rating"),
        ({"view": "therapist-rating", "measure": "nope"}, True, "Unknown measure"),
    ],
)
def test_what_the_therapists_launch_refuses(browser, ours, params, encounter, title):
    therapist = clinician(ours)
    client = Client(ours, therapist)
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(launch_url(ours, therapist, client.id, client.encounter("x") if encounter else None,
                                      **params))  # fmt: skip
        if answer is not None and answer.status < 400:
            sign_in(page, therapist)
            page.wait_for_load_state("load")
        assert page.locator("h1").inner_text() == title
    finally:
        context.close()
    assert client.search("QuestionnaireResponse", subject=f"Patient/{client.id}") == []


def test_the_pages_are_axe_clean(browser, ours):
    """The blind view, the therapist's form and the view after it (the context bypasses the CSP only to inject
    axe, as tests/web/test_accessibility.py does)."""
    if not AXE.exists():
        unavailable("axe-core is not installed (npm ci in tests/web; make test does it)")
    therapist, client, _ = _with_today(ours)
    context = browser.new_context(viewport={"width": 800, "height": 900}, bypass_csp=True)
    try:
        page = context.new_page()
        launched(page, ours, therapist, client.id, r".*/app/clinician$", view="clinician")
        assert axe_violations(page) == []
        page.locator("button.rate").click()
        page.wait_for_url(re.compile(r".*/app/form$"))
        assert axe_violations(page) == []
        _rate(page)
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        assert axe_violations(page) == []
    finally:
        context.close()


def test_inside_an_800_px_ehr_iframe(browser, ours, ehr_origin):
    """The EHR embeds the launch: the blind view, the form and the view after it stay in the frame (partitioned
    cookies, the rating's session cookie too) and nothing scrolls sideways."""
    therapist, client, _ = _with_today(ours)
    launch = launch_url(ours, therapist, client.id, view="clinician").removeprefix(ours.root)
    context = browser.new_context(viewport={"width": 1000, "height": 1250})
    try:
        page = context.new_page()
        page.goto(f"{ehr_origin}/embed?app={quote(ours.root)}&path={quote(launch)}")
        frame = page.frame(name="app")
        frame.wait_for_url(re.compile(r".*/auth/login.*"))
        sign_in(frame, therapist)
        for step in ("view", "form", "after"):
            frame.wait_for_url(re.compile(r".*/app/form$" if step == "form" else r".*/app/clinician$"))
            width = frame.evaluate("document.documentElement.clientWidth")
            assert width <= FRAME_WIDTH and frame.evaluate("document.documentElement.scrollWidth") <= width, step
            if step == "view":
                frame.locator("button.rate").click()
            elif step == "form":
                _rate(frame)
        assert TODAY in frame.content()
    finally:
        context.close()


def test_bad_requests_get_a_page_never_a_500(browser, ours, form_server, open_form, patient):
    """A form of the therapist's with nobody signed in (a development session names no fhirUser), a stale or
    missing CSRF token, no app session at all: each a plain page saying what to do."""
    context = browser.new_context()
    try:
        page = context.new_page()
        open_form(page, patient, "srs-therapist", "some-session")
        assert page.locator("h1").inner_text() == "Who is rating?"
        stranger = page.request.post(f"{ours.root}/app/therapist-rating", form={"csrf_token": "x"})
        assert stranger.status == 403 and "This view is not open" in stranger.text()
        therapist, client, _ = _with_today(ours)
        launched(page, ours, therapist, client.id, r".*/app/clinician$", view="clinician")
        stale = page.request.post(f"{ours.root}/app/therapist-rating", form={"csrf_token": "wrong"})
        assert stale.status == 403 and "out of date" in stale.text()
        huge = page.request.post(f"{ours.root}/app/therapist-rating", form={"csrf_token": "x" * 70_000})
        assert huge.status == 413
    finally:
        context.close()

"""The form where it is used (issue 7 point 2): full-screen on a 360 px phone and inside an EHR's 800 px iframe on
another site — with a partitioned session cookie, drafts and submission working in the frame — while a site not
listed in FHIR_SERVER_FRAME_ANCESTORS cannot frame it.  Screenshots of both are taken every run; with
FHIR_SERVER_SAVE_SCREENSHOTS=1 (``make screenshots``) they replace the ones in docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.web.conftest import PHONE, search
from tests.web.ehr_page import FRAME_WIDTH
from tests.web.form_driver import SRS_LINES, answers_of, expect_draft_saved, keys, slider, tap, with_total

DOCS = Path(__file__).parents[2] / "docs" / "screenshots"


def keep(shot: Path, backend: str) -> None:
    """Screenshots go to docs/ only on request, and from the SQLite run (the pages are the same on both)."""
    if os.environ.get("FHIR_SERVER_SAVE_SCREENSHOTS") == "1" and backend == "sqlite":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS / shot.name)


def frame_url(ehr_origin: str, form_server, patient: str) -> str:
    query = urlencode({"app": form_server.root, "patient": patient, "measure": "srs"})
    return f"{ehr_origin}/frame?{query}"


def test_srs_on_a_360_px_phone(browser, open_form, patient, backend, tmp_path):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, has_touch=True, is_mobile=True)
    try:
        page = context.new_page()
        open_form(page, patient, "srs")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
        for link_id in SRS_LINES:  # each line spans the screen but for the margins
            box = slider(page, link_id).locator(".vas-track").bounding_box()
            assert box["x"] >= 8 and box["x"] + box["width"] <= PHONE["width"] - 8 and box["width"] >= 300
        tap(page, "relationship", 0.8)
        tap(page, "goals", 0.62)
        shot = tmp_path / "srs-phone-360.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        keep(shot, backend)
    finally:
        context.close()


def test_srs_inside_an_800_px_ehr_iframe(browser, form_server, ehr_origin, patient, fhir, backend, tmp_path):
    context = browser.new_context(viewport={"width": 1000, "height": 1250})
    try:
        page = context.new_page()
        page.goto(frame_url(ehr_origin, form_server, patient))
        frame = page.frame(name="app")
        frame.wait_for_url(f"{form_server.root}/app/form")
        frame.locator("#rating-form").wait_for()
        [cookie] = context.cookies()
        assert cookie["partitionKey"] == "http://localhost"  # kept in the EHR site's jar (CHIPS)
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "None"
        width = frame.evaluate("document.documentElement.clientWidth")
        assert width <= FRAME_WIDTH and frame.evaluate("document.documentElement.scrollWidth") <= width

        expect_draft_saved(page, lambda: keys(frame, "relationship", "End", "PageDown", "PageDown"))
        expect_draft_saved(page, lambda: tap(page, "approach", 0.35, where=frame))
        keys(frame, "overall", "Home", "PageUp", "PageUp", "PageUp")
        shot = tmp_path / "srs-ehr-iframe-800.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, backend)

        frame.locator("button.submit").click()  # one line is still unmarked: the frame says so
        assert "still need" in frame.locator("#form-status").inner_text()
        keys(frame, "goals", "End")
        with page.expect_response(lambda r: r.url.endswith("/app/form") and r.request.method == "POST") as posted:
            frame.locator("button.submit").click()
        assert posted.value.status == 303
        frame.locator(".thanks").wait_for()
    finally:
        context.close()
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    answers = answers_of(response)
    assert abs(answers["approach"] - 35) <= 1
    assert answers == with_total({"relationship": 80, "goals": 100, "approach": answers["approach"], "overall": 30})


def test_a_site_not_listed_cannot_frame_the_form(browser, form_server, ehr_port, patient, fhir):
    """The same stand-in EHR page on an origin that is not in frame-ancestors: the browser refuses to show the
    form in the frame (and nothing is submitted)."""
    unlisted = f"http://127.0.0.1:{ehr_port}"
    context = browser.new_context()
    try:
        page = context.new_page()
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "frame-ancestors" in m.text else None)
        page.goto(frame_url(unlisted, form_server, patient))
        page.wait_for_timeout(1500)
        frame = page.frame(name="app")
        assert frame is not None and frame.locator("#rating-form").count() == 0
        assert refused, "Chromium reports the frame-ancestors refusal"
    finally:
        context.close()
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []


@pytest.mark.parametrize("measure", ["csrs", "cors", "ycsrs", "ycors"])
def test_every_shipped_measure_renders(page, open_form, patient, measure):
    """No per-measure template: each shipped Questionnaire becomes a form with a control for each of its
    questions (the young-child faces are a radio group, the child lines are sliders)."""
    open_form(page, patient, measure)
    questions = page.locator("[data-link-id]")
    assert questions.count() >= 1
    for index in range(questions.count()):
        kind = questions.nth(index).get_attribute("data-kind")
        control = {"slider": "[role=slider]", "choice": "input[type=radio]", "string": "input[type=text]"}[kind]
        assert questions.nth(index).locator(control).count() >= 1

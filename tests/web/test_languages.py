"""The form in the client's language (issue 22): English, French and Spanish as shipped, Arabic from the sample
content pack (examples/packs/arabic-sample: right to left), on a 360 px phone.  Each form shows its title and
buttons in the language, can be filled and sent (the QuestionnaireResponse records the language), keeps the answers
marked so far when the client switches language, and passes axe-core; the browser's Accept-Language chooses French
when it asks for French."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.smart.form_model import build_form
from tests.support.databases import fresh_database
from tests.support.server import RunningServer, ServerThread
from tests.web.conftest import AXE, PHONE, search, unavailable
from tests.web.form_driver import keys, slider, value_now
from tests.web.test_accessibility import axe_violations

PACK = Path(__file__).resolve().parents[2] / "examples" / "packs" / "arabic-sample"
SEND = {"en": "Send my answers", "fr": "Envoyer mes réponses", "es": "Enviar mis respuestas", "ar": "إرسال إجاباتي"}
THANKS = {"en": "Thank you", "fr": "Merci", "es": "Gracias", "ar": "شكرًا لك"}
LINES = {"srs": ("relationship", "goals", "approach", "overall"),
         "ors": ("individually", "interpersonally", "socially", "overall")}  # fmt: skip
LANGUAGES = ("en", "fr", "es", "ar")


@pytest.fixture(scope="module")
def language_server(backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    """A server of its own (its own database): the pack's versions become the ones a url alone means."""
    if not (PACK / "pack.json").exists():
        pytest.fail("the Arabic sample pack is missing (examples/packs/arabic-sample)")
    with fresh_database(backend) as url:
        settings = Settings(
            database_url=url, app_dev_sessions=True, frame_ancestors=[ehr_origin], auth_required=False,
            content_packs=str(PACK), _env_file=None,
        )  # fmt: skip
        with ServerThread(settings, backend) as running:
            yield running


@pytest.fixture
def fhir(language_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=language_server.fhir_base, timeout=30) as client:
        yield client


@pytest.fixture
def phone(browser) -> Iterator[object]:
    """A phone; axe-core goes in as an inline script, so only this test's context bypasses the page's CSP."""
    if not AXE.exists():
        unavailable("axe-core is not installed (npm ci in tests/web; make test does it)")
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True, bypass_csp=True, locale="en-US")
    yield context.new_page()
    context.close()


def open_form(page, server: RunningServer, ehr_origin: str, measure: str) -> str:
    patient = f"lang-{uuid4().hex[:12]}"
    page.goto(f"{ehr_origin}/launch?{urlencode({'app': server.root, 'patient': patient, 'measure': measure})}")
    page.wait_for_url(f"{server.root}/app/form")
    page.wait_for_load_state("load")
    return patient


def switch_to(page, language: str) -> None:
    with page.expect_navigation():
        page.locator(f'#language-switch button[value="{language}"]').click()
    page.wait_for_load_state("load")


def title_in(fhir: httpx.Client, page, language: str) -> str:
    """The Questionnaire's title in ``language``, as the form model reads it from the stored Questionnaire."""
    canonical = page.locator("#rating-form").get_attribute("data-questionnaire")
    url, _, version = canonical.partition("|")
    [questionnaire] = search(fhir, "Questionnaire", url=url, version=version)
    return build_form(questionnaire, language).title


@pytest.mark.parametrize("measure", ["srs", "ors"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_form_in_each_language(phone, language_server, ehr_origin, fhir, measure, language):
    page = phone
    patient = open_form(page, language_server, ehr_origin, measure)
    offered = page.locator("#language-switch button").evaluate_all("bs => bs.map(b => b.value)")
    assert offered == ["en", "ar", "es", "fr"]  # the app's catalogue order: English, then by code
    first = LINES[measure][0]
    keys(page, first, "End")  # marked in English, then the language is switched: the mark stays
    if language != "en":
        switch_to(page, language)
    html = page.locator("html")
    assert html.get_attribute("lang") == language
    assert html.get_attribute("dir") == ("rtl" if language == "ar" else "ltr")
    assert page.locator("h1").inner_text() == title_in(fhir, page, language)
    assert page.locator("button.submit").inner_text() == SEND[language]
    assert page.locator('#language-switch [aria-current="true"]').get_attribute("value") == language
    assert value_now(page, first) == 100
    assert axe_violations(page) == []

    for link_id in LINES[measure][1:]:
        keys(page, link_id, "Home", "PageUp")
    respondent = page.locator('[data-link-id="respondent"] label.option')
    if respondent.count():
        respondent.first.click()
    with page.expect_navigation():
        page.locator("button.submit").click()
    assert page.locator("h1").inner_text() == THANKS[language]
    assert page.locator("html").get_attribute("dir") == ("rtl" if language == "ar" else "ltr")
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert response["language"] == language
    assert axe_violations(page) == []


def test_in_arabic_the_low_end_of_a_line_is_on_the_right(phone, language_server, ehr_origin):
    page = phone
    open_form(page, language_server, ehr_origin, "srs")
    switch_to(page, "ar")
    item = page.locator('[data-link-id="goals"]')
    low, high = item.locator(".anchor-lower").bounding_box(), item.locator(".anchor-upper").bounding_box()
    assert low["x"] > high["x"]  # the anchors follow the text: "low" where an Arabic reader starts, on the right
    line = slider(page, "goals").locator(".vas-track").bounding_box()
    y = line["y"] + line["height"] / 2
    page.touchscreen.tap(low["x"] + low["width"] - 2, y)  # under the "low" anchor's outer end
    assert value_now(page, "goals") <= 10
    page.touchscreen.tap(high["x"] + 2, y)  # under the "high" anchor's outer end
    assert value_now(page, "goals") >= 90
    keys(page, "goals", "Home", "ArrowLeft", "ArrowLeft", "ArrowRight")  # the arrow's way: left is towards "high"
    assert value_now(page, "goals") == 1
    mark = slider(page, "goals").locator(".vas-mark").bounding_box()
    assert mark["x"] > line["x"] + line["width"] * 0.9  # a low mark is drawn on the right


def test_accept_language_picks_french(browser, language_server, ehr_origin):
    context = browser.new_context(viewport=PHONE, locale="fr-FR")  # Accept-Language: fr-FR,fr;q=0.9
    try:
        page = context.new_page()
        open_form(page, language_server, ehr_origin, "srs")
        assert page.locator("html").get_attribute("lang") == "fr"
        assert page.locator("button.submit").inner_text() == SEND["fr"]
        # the first page fixed the session's language: the thank-you page and any reload keep it
        page.reload()
        assert page.locator("html").get_attribute("lang") == "fr"
    finally:
        context.close()

"""Issue 22: the form speaks a language.  build_form takes every text from the Questionnaire's translations and
keeps the answers language-independent; FormService shows the session's language and the QuestionnaireResponse
records it (on both databases, through the server's own FormService and FHIR API)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest

from fhir_server.config import PROJECT_ROOT
from fhir_server.library import discover
from fhir_server.smart.form_model import REQUIRED_MESSAGES, build_form, read_answers, response_items

LIBRARY = discover([PROJECT_ROOT / "questionnaires"])
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors"
WAI_SR = "http://fit-fhir.org/fhir/Questionnaire/wai-sr"


def _shown(form) -> list[tuple]:
    return [
        (i.link_id, i.kind, i.text, i.prefix, i.lower, i.upper, tuple(i.help), tuple(i.choices)) for i in form.walk()
    ]


def test_the_srs_in_french_and_spanish():
    srs = LIBRARY.instrument(SRS).questionnaire
    french, spanish = build_form(srs, "fr"), build_form(srs, "es")
    assert (french.language, french.languages, french.direction) == ("fr", ["en", "fr", "es"], "ltr")
    assert french.title == "Échelle d'évaluation de la séance (SRS)"
    items = french.by_link_id()
    assert [items[k].text for k in ("relationship", "goals", "approach", "overall")] == [
        "Relation", "Objectifs et sujets", "Approche ou méthode", "Dans l'ensemble",
    ]  # fmt: skip
    assert (items["relationship"].lower, items["relationship"].upper) == ("Bas", "Élevé")
    assert spanish.by_link_id()["approach"].text == "Enfoque o método"
    assert spanish.by_link_id()["goals"].help == ["Si la sesión de hoy se centró en lo que es importante para usted."]
    assert build_form(srs).title == "Session Rating Scale (SRS)" and build_form(srs, "de").language == "en"


@pytest.mark.parametrize("url", [i.url for i in LIBRARY.instruments])
def test_every_text_changes_with_the_language_and_no_answer_does(url):
    questionnaire = LIBRARY.instrument(url).questionnaire
    forms = {lang: build_form(questionnaire, lang) for lang in ("en", "fr", "es")}
    shapes = {lang: [(i.link_id, i.kind, [t for t, _ in i.choices]) for i in f.walk()] for lang, f in forms.items()}
    assert shapes["fr"] == shapes["en"] == shapes["es"]  # same items, same tokens
    for lang in ("fr", "es"):
        for here, there in zip(_shown(forms[lang]), _shown(forms["en"]), strict=True):
            for said, english in zip(here[2:], there[2:], strict=True):
                if english and not (isinstance(english, str) and english.rstrip(".").isdigit()):
                    assert said != english or english in ("Total", "Total (sum, 12-60)"), (lang, here[0], english)
        for item in forms[lang].walk():
            assert item.required_message == REQUIRED_MESSAGES.get(item.kind, item.required_message)  # msgids stay


def test_a_choice_records_the_same_coding_whatever_its_label():
    wai = LIBRARY.instrument(WAI_SR).questionnaire
    fields = {f"answer.wai-sr-{n}": "4" for n in range(1, 13)}
    recorded = {}
    for lang in ("en", "fr", "es"):
        form = build_form(wai, lang)
        assert (
            dict(form.by_link_id()["wai-sr-1"].choices)["4"]
            == {"en": "Very often", "fr": "Très souvent", "es": "Muy a menudo"}[lang]
        )
        answers, errors = read_answers(form, fields)
        assert not errors
        recorded[lang] = response_items(form, answers)
    assert recorded["fr"] == recorded["en"] == recorded["es"]
    assert recorded["fr"][0]["answer"][0]["valueCoding"]["display"] == "Very often"  # the coding as defined


@pytest.fixture
def fhir(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        yield client


def test_a_form_submitted_in_french_records_its_language(server, fhir):
    patient = f"lang-{uuid4().hex[:12]}"
    sessions, forms = server.app.state.app_sessions, server.app.state.rating_form
    _, session = sessions.create_session(patient=patient, questionnaire=f"{SRS}|1.0.2", language="fr-CA")
    form = forms.form_for(session)
    assert form.language == "fr" and form.by_link_id()["goals"].text == "Objectifs et sujets"
    assert forms.form_for(session, "es").by_link_id()["goals"].text == "Metas y temas"
    assert forms.form_for(session) is form  # cached by (canonical, language shown)
    marks = {"relationship": "91", "goals": "88", "approach": "95", "overall": "90"}
    submitted = forms.submit(session, {f"answer.{k}": v for k, v in marks.items()}, None)
    assert submitted.response_id and not submitted.errors
    stored = fhir.get(f"/QuestionnaireResponse/{submitted.response_id}").json()
    assert stored["language"] == "fr" and stored["questionnaire"] == f"{SRS}|1.0.2"
    assert [i["answer"][0] for i in stored["item"][:4]] == [{"valueInteger": int(v)} for v in marks.values()]


def test_a_session_without_a_language_records_english(server, fhir):
    patient = f"lang-{uuid4().hex[:12]}"
    sessions, forms = server.app.state.app_sessions, server.app.state.rating_form
    _, session = sessions.create_session(patient=patient, questionnaire=f"{ORS}|1.0.2")
    fields = {
        "answer.respondent": "self",
        **{f"answer.{k}": "50" for k in ("individually", "interpersonally", "socially", "overall")},
    }
    submitted = forms.submit(session, fields, None)
    assert submitted.response_id, submitted.errors
    assert fhir.get(f"/QuestionnaireResponse/{submitted.response_id}").json()["language"] == "en"

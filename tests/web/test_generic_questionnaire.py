"""Rendering is driven by the Questionnaire (issue 7 point 2), not by templates per measure: a Questionnaire this
server has never seen — stored through the FHIR API, with a group, a slider with its own range and anchors, radio
options, a boolean, a decimal, free text and an enableWhen chain — becomes a working form
whose submission is a valid, stored QuestionnaireResponse."""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import search
from tests.web.test_app_sessions import csrf_of, start_session

URL = "http://example.org/fhir/Questionnaire/generic-check"
SLIDER = [
    {
        "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl",
        "valueCodeableConcept": {
            "coding": [{"system": "http://hl7.org/fhir/questionnaire-item-control", "code": "slider"}]
        },
    },
    {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
    {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 20},
]


def anchor(link_id: str, control: str, text: str) -> dict:
    return {
        "linkId": link_id,
        "type": "display",
        "text": text,
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl",
                "valueCodeableConcept": {
                    "coding": [{"system": "http://hl7.org/fhir/questionnaire-item-control", "code": control}]
                },
            }
        ],
    }


QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "url": URL,
    "version": "2.1",
    "status": "active",
    "title": "Generic check",
    "item": [
        {"linkId": "intro", "type": "display", "text": "An introduction from the Questionnaire."},
        {
            "linkId": "block",
            "type": "group",
            "text": "A group of questions",
            "item": [
                {
                    "linkId": "calm",
                    "type": "integer",
                    "text": "How calm?",
                    "required": True,
                    "extension": SLIDER,
                    "item": [anchor("calm-lower", "lower", "Restless"), anchor("calm-upper", "upper", "Serene")],
                },
                {
                    "linkId": "colour",
                    "type": "choice",
                    "text": "Pick a colour",
                    "answerOption": [
                        {"valueCoding": {"system": "http://example.org/colours", "code": "red", "display": "Red"}},
                        {"valueCoding": {"system": "http://example.org/colours", "code": "blue", "display": "Blue"}},
                    ],
                },
                {"linkId": "slept", "type": "boolean", "text": "Slept well?", "required": True},
                {
                    "linkId": "hours",
                    "type": "decimal",
                    "text": "How many hours?",
                    "required": True,
                    "enableWhen": [{"question": "slept", "operator": "=", "answerBoolean": True}],
                },
                {
                    "linkId": "why",
                    "type": "text",
                    "text": "Why not?",
                    "enableWhen": [{"question": "slept", "operator": "=", "answerBoolean": False}],
                },
            ],
        },
    ],
}


def test_an_unseen_questionnaire_becomes_a_working_form(form_server, fhir, patient):
    stored = fhir.post("/Questionnaire", json=QUESTIONNAIRE, headers={"Content-Type": "application/fhir+json"})
    assert stored.status_code in (200, 201), stored.text
    with start_session(form_server.root, patient, measure=f"{URL}|2.1") as browser:
        page = browser.get("/app/form").text
        assert "<h1>Generic check</h1>" in page and "An introduction from the Questionnaire." in page
        assert re.search(r'<fieldset class="group"[^>]*>\s*<legend class="group-text">A group of questions', page)
        assert 'aria-valuemax="20"' in page and "Restless" in page and "Serene" in page
        assert 'value="red"' in page and 'value="true"' in page and 'inputmode="decimal"' in page
        assert "<textarea" in page and "data-enable-when=" in page
        fields = {
            "csrf_token": csrf_of(page),
            "answer.calm": "17",
            "answer.colour": "blue",
            "answer.slept": "true",
            "answer.hours": "7.5",
            "answer.why": "answered, but disabled by enableWhen: dropped",
        }
        missing = browser.post("/app/form", data={**fields, "answer.hours": ""})
        assert missing.status_code == 422 and ">Please fill this in.</p>" in missing.text
        assert browser.post("/app/form", data=fields).status_code == 303
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert response["questionnaire"] == f"{URL}|2.1"
    [group] = response["item"]
    assert group["linkId"] == "block"
    answers = {i["linkId"]: i["answer"][0] for i in group["item"]}
    assert answers == {
        "calm": {"valueInteger": 17},
        "colour": {"valueCoding": {"system": "http://example.org/colours", "code": "blue", "display": "Blue"}},
        "slept": {"valueBoolean": True},
        "hours": {"valueDecimal": 7.5},
    }


def test_an_unknown_measure_gets_a_clear_page(form_server, patient):
    answer = httpx.post(
        f"{form_server.root}/app/dev-session", data={"patient": patient, "measure": "http://example.org/nothing"}
    )
    assert answer.status_code == 400 and "not created" in answer.text
    with start_session(form_server.root, patient, measure="http://example.org/nothing|1") as browser:
        page = browser.get("/app/form")
    assert page.status_code == 409 and "No form to show" in page.text

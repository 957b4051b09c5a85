"""The form's responses carry their calculated items, as an SDC renderer's (LHC-Forms') do: for every scored
measure, a response submitted through the app's form over real HTTP is stored with each ``calculatedExpression``
item answered, in the Questionnaire's order; the Questionnaire's FHIRPath, evaluated here with fhirpathpy directly
(not through the server's evaluator), gives the same values; ``$validate`` finds no error; and the values are the
scores the scoring module computes.  The client's page never shows them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhir_server.scoring.rules import load_rules
from fhir_server.scoring.scores import compute_scores
from tests.web.conftest import search
from tests.web.test_app_sessions import csrf_of, start_session

QUESTIONNAIRES = Path(__file__).parents[2] / "questionnaires"
SCORED = ("ors", "srs", "cors", "csrs", "wai-sr")
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
VARIABLE = "http://hl7.org/fhir/StructureDefinition/variable"
MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"
# Marks (0..100) and choice positions per answer set: ends of the range, and values giving fractional means.
MARKS = ([0, 100, 37, 64], [100, 100, 100, 100], [3, 58, 91, 12])


def questionnaire_of(measure: str) -> dict[str, Any]:
    return json.loads((QUESTIONNAIRES / measure / "questionnaire.json").read_text())


def walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for item in items for x in (item, *walk(item.get("item") or []))]


def calculated_items(questionnaire: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in walk(questionnaire["item"]) if extension(item, CALCULATED) is not None]


def extension(item: dict[str, Any], url: str) -> Any:
    return next((e for e in item.get("extension", []) if e["url"] == url), None)


def fields_for(questionnaire: dict[str, Any], marks: list[int]) -> dict[str, str]:
    """A full set of answers as the page posts them: a mark on every line, an option in every radio group (the
    first for "who is filling it in", so the relationship stays disabled)."""
    fields = {}
    for index, item in enumerate(i for i in walk(questionnaire["item"]) if not i.get("enableWhen")):
        if item["type"] == "integer":
            fields[f"answer.{item['linkId']}"] = str(marks[index % len(marks)])
        elif item["type"] == "choice":
            options = item["answerOption"]
            position = 0 if item["linkId"] == "respondent" else (marks[index % len(marks)] + index) % len(options)
            fields[f"answer.{item['linkId']}"] = options[position]["valueCoding"]["code"]
    return fields


def response_answers(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """linkId → the first answer, over nested items."""
    out = {}
    for item in walk(response.get("item", [])):
        if item.get("answer"):
            out[item["linkId"]] = item["answer"][0]
    return out


def fhirpath(questionnaire: dict[str, Any], response: dict[str, Any], expression: str) -> list:
    """The expression as an SDC renderer evaluates it: %resource, %questionnaire and the root variables in order."""
    env: dict[str, Any] = {"resource": response, "questionnaire": questionnaire}
    for ext in questionnaire.get("extension", []):
        if ext["url"] == VARIABLE:
            variable = ext["valueExpression"]
            env[variable["name"]] = evaluate(response, variable["expression"], env, models["r4"])
    return evaluate(response, expression, env, models["r4"])


@pytest.mark.parametrize("marks", MARKS, ids=["mixed", "top", "fractions"])
@pytest.mark.parametrize("measure", SCORED)
def test_a_submitted_form_carries_its_calculated_scores(form_server, fhir, patient, measure, marks):
    questionnaire = questionnaire_of(measure)
    calculated = calculated_items(questionnaire)
    assert calculated, f"{measure} has calculated score items"
    with start_session(form_server.root, patient, measure) as browser:
        page = browser.get("/app/form").text
        for item in calculated:  # the client never sees (nor could send) a score
            assert f'data-link-id="{item["linkId"]}"' not in page and f'name="answer.{item["linkId"]}"' not in page
        sent = browser.post("/app/form", data={"csrf_token": csrf_of(page), **fields_for(questionnaire, marks)})
        assert sent.status_code == 303, sent.text
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    answers = response_answers(response)

    # (1) every calculated item has a value, typed by the item, in the Questionnaire's order
    for item in calculated:
        key = {"decimal": "valueDecimal", "integer": "valueInteger"}[item["type"]]
        assert isinstance(answers.get(item["linkId"], {}).get(key), int | float), (item["linkId"], answers)
    order = [item["linkId"] for item in walk(questionnaire["item"])]
    given = [item["linkId"] for item in walk(response["item"])]
    assert given == [link_id for link_id in order if link_id in given]

    # (2) the Questionnaire's own FHIRPath, evaluated independently, gives the same values
    for item in calculated:
        expected = fhirpath(questionnaire, response, extension(item, CALCULATED)["valueExpression"]["expression"])
        assert len(expected) == 1, (item["linkId"], expected)
        value = Decimal(str(next(v for k, v in answers[item["linkId"]].items() if k.startswith("value"))))
        assert value == Decimal(str(expected[0])), (item["linkId"], value, expected)
        places = extension(item, MAX_DECIMALS)
        if places is not None:
            assert -value.as_tuple().exponent <= places["valueInteger"]

    # (3) the server's $validate finds nothing wrong with it
    outcome = fhir.post("/QuestionnaireResponse/$validate", json=response)
    assert outcome.status_code == 200, outcome.text
    problems = [i for i in outcome.json()["issue"] if i["severity"] in ("error", "fatal")]
    assert problems == [], problems

    # (4) and the values are the scores the scoring module computes
    rules = load_rules(QUESTIONNAIRES / measure / "scoring.json")
    scores = compute_scores(rules, response, questionnaire)
    for score in rules.scores:
        given_value = next(v for k, v in answers[score.linkId].items() if k.startswith("value"))
        assert scores[score.id] is not None and Decimal(str(given_value)) == scores[score.id], score.id

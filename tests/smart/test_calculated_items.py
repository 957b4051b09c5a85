"""``with_calculated``: the calculated items a form response gets (placement in nested groups, typing by the item,
maxDecimalPlaces, empty and disabled calculations, a score computed from another), and the form itself never
showing them.  The end-to-end check over HTTP, per measure, is tests/web/test_form_calculated_items.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fhir_server import fhirjson
from fhir_server.smart.calculated import with_calculated
from fhir_server.smart.form_model import build_form
from fhir_server.validation.questionnaire_response import validate_response

CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
VARIABLE = "http://hl7.org/fhir/StructureDefinition/variable"
MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"


def calculated(link_id: str, kind: str, expression: str, places: int | None = None, **extra: Any) -> dict:
    extension = [{"url": CALCULATED, "valueExpression": {"language": "text/fhirpath", "expression": expression}}]
    if places is not None:
        extension.append({"url": MAX_DECIMALS, "valueInteger": places})
    return {"linkId": link_id, "type": kind, "readOnly": True, "extension": extension, **extra}


def answer_of(link_id: str) -> str:
    return f"%resource.repeat(item).where(linkId='{link_id}').answer.value"


QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "status": "active",
    "extension": [
        {"url": VARIABLE, "valueExpression": {"name": "a", "language": "text/fhirpath", "expression": answer_of("a")}},
        {"url": VARIABLE, "valueExpression": {"name": "b", "language": "text/fhirpath", "expression": answer_of("b")}},
    ],
    "item": [
        {
            "linkId": "first",
            "type": "group",
            "item": [
                {"linkId": "a", "type": "integer"},
                calculated("a-third", "decimal", "%a / 3", places=2),  # 0.333… → 0.33
                {"linkId": "b", "type": "integer"},
            ],
        },
        {"linkId": "flag", "type": "boolean"},
        {
            "linkId": "scores",
            "type": "group",
            "item": [
                calculated("sum", "integer", "iif(%a.exists() and %b.exists(), %a + %b, {})"),
                calculated("half", "integer", "%a / 2"),  # a fraction for an integer item is left out
                calculated(
                    "only-if-flag",
                    "decimal",
                    "%a * 1.5",
                    enableWhen=[{"question": "flag", "operator": "=", "answerBoolean": True}],
                ),
                calculated("double-sum", "decimal", answer_of("sum") + " * 2", places=1),  # from another score
            ],
        },
    ],
}


def response(items: list[dict]) -> dict:
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}


def given(a: int | None, b: int | None, flag: bool | None = None) -> list[dict]:
    first = [{"linkId": k, "answer": [{"valueInteger": v}]} for k, v in (("a", a), ("b", b)) if v is not None]
    items = [{"linkId": "first", "item": first}] if first else []
    if flag is not None:
        items.append({"linkId": "flag", "answer": [{"valueBoolean": flag}]})
    return items


def test_calculated_answers_take_their_place_in_the_questionnaire_order():
    items = with_calculated(QUESTIONNAIRE, response(given(7, 4, flag=False)))
    assert json.loads(fhirjson.dumps(items)) == [
        {
            "linkId": "first",
            "item": [
                {"linkId": "a", "answer": [{"valueInteger": 7}]},
                {"linkId": "a-third", "answer": [{"valueDecimal": 2.33}]},
                {"linkId": "b", "answer": [{"valueInteger": 4}]},
            ],
        },
        {"linkId": "flag", "answer": [{"valueBoolean": False}]},
        {
            "linkId": "scores",  # a group only the scores answer is created for them
            "item": [
                {"linkId": "sum", "answer": [{"valueInteger": 11}]},
                {"linkId": "double-sum", "answer": [{"valueDecimal": 22.0}]},
            ],
        },
    ]
    assert fhirjson.dumps(items).count(b"22.0") == 1  # written with its decimal place, as computed
    assert validate_response(response(items), QUESTIONNAIRE) == []


def test_an_enabled_item_and_an_integral_half_are_answered():
    items = with_calculated(QUESTIONNAIRE, response(given(8, 1, flag=True)))
    scores = {i["linkId"]: i["answer"][0] for i in items[-1]["item"]}
    assert scores == {
        "sum": {"valueInteger": 9},
        "half": {"valueInteger": 4},
        "only-if-flag": {"valueDecimal": 12.0},
        "double-sum": {"valueDecimal": 18.0},
    }
    assert validate_response(response(items), QUESTIONNAIRE) == []


def test_a_partial_response_has_no_total():
    items = with_calculated(QUESTIONNAIRE, response(given(5, None)))
    link_ids = [i["linkId"] for i in items[0]["item"]]
    assert link_ids == ["a", "a-third"] and len(items) == 1  # no sum, no scores group
    assert with_calculated(QUESTIONNAIRE, response([])) == []


def test_the_form_never_shows_a_calculated_item_even_one_not_marked_read_only():
    questionnaire = json.loads(json.dumps(QUESTIONNAIRE))
    for item in questionnaire["item"][2]["item"]:
        del item["readOnly"]
    shown = {item.link_id for item in build_form(questionnaire).walk()}
    assert shown == {"first", "a", "b", "flag", "scores"}


def test_the_shipped_measures_add_nothing_the_validator_refuses():
    root = Path(__file__).parents[2] / "questionnaires" / "ors"
    questionnaire = json.loads((root / "questionnaire.json").read_text())
    lines = ("individually", "interpersonally", "socially", "overall")
    items = [
        {
            "linkId": "respondent",
            "answer": [{"valueCoding": questionnaire["item"][1]["answerOption"][0]["valueCoding"]}],
        }
    ]
    items += [{"linkId": k, "answer": [{"valueInteger": v}]} for k, v in zip(lines, (100, 100, 100, 100), strict=True)]
    completed = with_calculated(questionnaire, response(items))
    assert completed[-1] == {"linkId": "total", "answer": [{"valueDecimal": 40.0}]}
    assert completed[-1]["answer"][0]["valueDecimal"].raw == "40.0"
    assert validate_response(response(completed), questionnaire) == []

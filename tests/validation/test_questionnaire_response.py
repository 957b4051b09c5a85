"""SDC / R4 Questionnaire rules for a QuestionnaireResponse, checked item by item (no server needed): each issue
names the item with a FHIRPath expression and carries the code of docs/security.md's table."""

from __future__ import annotations

import pytest

from fhir_server.validation.questionnaire_response import validate_response

SLIDER = [
    {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
    {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 100},
]
CALC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "status": "active",
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/variable",
            "valueExpression": {
                "name": "a",
                "language": "text/fhirpath",
                "expression": "%resource.item.where(linkId='a').answer.value",
            },
        },
        {
            "url": "http://hl7.org/fhir/StructureDefinition/variable",
            "valueExpression": {
                "name": "b",
                "language": "text/fhirpath",
                "expression": "%resource.item.where(linkId='b').answer.value",
            },
        },
    ],
    "item": [
        {"linkId": "intro", "type": "display", "text": "Hello"},
        {"linkId": "a", "type": "integer", "required": True, "extension": SLIDER},
        {"linkId": "b", "type": "integer", "required": True, "extension": SLIDER},
        {
            "linkId": "who",
            "type": "choice",
            "required": True,
            "answerOption": [
                {"valueCoding": {"system": "urn:r", "code": "self"}},
                {"valueCoding": {"system": "urn:r", "code": "other"}},
            ],
        },
        {
            "linkId": "relation",
            "type": "string",
            "required": True,
            "maxLength": 20,
            "enableWhen": [{"question": "who", "operator": "=", "answerCoding": {"system": "urn:r", "code": "other"}}],
        },
        {"linkId": "tags", "type": "string", "repeats": True},
        {
            "linkId": "total",
            "type": "decimal",
            "readOnly": True,
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces", "valueInteger": 1},
                {
                    "url": CALC,
                    "valueExpression": {
                        "language": "text/fhirpath",
                        "expression": "iif(%a.exists() and %b.exists(), (%a + %b) / 10, {})",
                    },
                },
            ],
        },
    ],
}


def response(*items, status="completed"):
    return {"resourceType": "QuestionnaireResponse", "status": status, "item": list(items)}


def answer(link_id, **value):
    return {"linkId": link_id, "answer": [value]}


SELF = answer("who", valueCoding={"system": "urn:r", "code": "self"})
OTHER = answer("who", valueCoding={"system": "urn:r", "code": "other"})


def codes(issues):
    return [(i.code, i.expression[0]) for i in issues]


def test_a_complete_valid_response_has_no_issues():
    ok = response(answer("a", valueInteger=55), answer("b", valueInteger=0), SELF, answer("total", valueDecimal=5.5))
    assert validate_response(ok, QUESTIONNAIRE) == []


def test_scores_may_be_omitted_and_in_progress_may_be_partial():
    assert (
        validate_response(response(answer("a", valueInteger=1), answer("b", valueInteger=2), SELF), QUESTIONNAIRE) == []
    )
    assert validate_response(response(answer("a", valueInteger=1), status="in-progress"), QUESTIONNAIRE) == []


@pytest.mark.parametrize(
    ("item", "code", "where"),
    [
        (answer("zzz", valueInteger=1), "not-found", "QuestionnaireResponse.item[3]"),
        (answer("tags", valueInteger=1), "structure", "QuestionnaireResponse.item[3].answer[0]"),
        (answer("relation", valueString="x" * 30), "invariant", "QuestionnaireResponse.item[3]"),
        ({"linkId": "intro", "answer": [{"valueString": "x"}]}, "structure", "QuestionnaireResponse.item[3]"),
    ],
)
def test_item_level_problems(item, code, where):
    issues = validate_response(
        response(answer("a", valueInteger=1), answer("b", valueInteger=2), SELF, item), QUESTIONNAIRE
    )
    assert (code, where) in codes(issues)


def test_values_outside_min_max_and_not_in_options():
    issues = validate_response(
        response(
            answer("a", valueInteger=101),
            answer("b", valueInteger=-1),
            answer("who", valueCoding={"system": "urn:r", "code": "nobody"}),
        ),
        QUESTIONNAIRE,
    )
    assert codes(issues) == [
        ("value", "QuestionnaireResponse.item[0].answer[0]"),
        ("value", "QuestionnaireResponse.item[1].answer[0]"),
        ("value", "QuestionnaireResponse.item[2].answer[0]"),
    ]


def test_repeats_only_where_allowed():
    two = {"linkId": "a", "answer": [{"valueInteger": 1}, {"valueInteger": 2}]}
    assert ("structure", "QuestionnaireResponse.item[0]") in codes(
        validate_response(response(two, answer("b", valueInteger=1), SELF), QUESTIONNAIRE)
    )
    tags = {"linkId": "tags", "answer": [{"valueString": "x"}, {"valueString": "y"}]}
    assert (
        validate_response(response(answer("a", valueInteger=1), answer("b", valueInteger=1), SELF, tags), QUESTIONNAIRE)
        == []
    )


def test_required_items_when_completed_and_enable_when():
    issues = validate_response(response(answer("a", valueInteger=1), OTHER), QUESTIONNAIRE)
    assert [(c, w) for c, w in codes(issues)] == [
        ("required", "QuestionnaireResponse.item.where(linkId='b')"),
        ("required", "QuestionnaireResponse.item.where(linkId='relation')"),  # enabled by who = other
    ]
    enabled = response(
        answer("a", valueInteger=1), answer("b", valueInteger=1), OTHER, answer("relation", valueString="sister")
    )
    assert validate_response(enabled, QUESTIONNAIRE) == []
    too_long = response(
        answer("a", valueInteger=1), answer("b", valueInteger=1), OTHER, answer("relation", valueString="x" * 21)
    )
    assert codes(validate_response(too_long, QUESTIONNAIRE)) == [("value", "QuestionnaireResponse.item[3].answer[0]")]


def test_a_calculated_score_must_agree_with_its_expression():
    wrong = response(
        answer("a", valueInteger=50), answer("b", valueInteger=50), SELF, answer("total", valueDecimal=9.9)
    )
    assert codes(validate_response(wrong, QUESTIONNAIRE)) == [("invariant", "QuestionnaireResponse.item[3]")]
    right = response(
        answer("a", valueInteger=50), answer("b", valueInteger=50), SELF, answer("total", valueDecimal=10.0)
    )
    assert validate_response(right, QUESTIONNAIRE) == []

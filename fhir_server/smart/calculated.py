"""The calculated items (SDC ``calculatedExpression``: a measure's scores) of a response the form assembled.

An SDC renderer such as LHC-Forms puts every calculated item in the response it writes; the form does the same,
so the response sent to the EHR shows its total and an SDC checker re-computing the expression finds the same
number.  The client never enters or sees these items (``build_form`` leaves them out): the values come from the
Questionnaire's own FHIRPath, evaluated by the evaluator the validator checks them with (``validation/sdc.py``),
so a stored response always passes its own check.  An empty calculation (an item missing) adds nothing.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fhir_server.fhirjson import FhirDecimal
from fhir_server.validation.enable_when import is_enabled
from fhir_server.validation.sdc import CALCULATED, VARIABLE, calculated_values, extension_value

MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"

Answers = dict[str, dict[str, Any]]  # linkId → the one answer of a calculated item


def with_calculated(questionnaire: dict[str, Any], response: dict[str, Any]) -> list[dict[str, Any]]:
    """``response``'s items with an answer for every enabled calculated item whose calculation gives a number,
    each in its place in the Questionnaire's order and nesting."""
    defined, given = questionnaire.get("item") or [], response.get("item") or []
    answers = _answers(questionnaire, response)
    # A score computed from another score needs that one in the response first (the validator evaluates the
    # final response): evaluate again until nothing changes, but only when an expression names a calculated item,
    # since FHIRPath is the slow part of a submission.
    for _ in range(len(_calculated_ids(defined)) if answers and _chained(questionnaire) else 0):
        again = _answers(questionnaire, {**response, "item": _merge(defined, given, answers)})
        if again == answers:
            break
        answers = again
    return _merge(defined, given, answers)


def typed_answer(definition: dict[str, Any], value: Decimal) -> dict[str, Any] | None:
    """The answer a calculated value becomes, by the item's type; None when the type cannot hold it."""
    places = extension_value(definition, MAX_DECIMALS)
    if isinstance(places, int) and not isinstance(places, bool) and places >= 0:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)  # as the scoring rounds
    if definition.get("type") == "decimal":
        return {"valueDecimal": FhirDecimal(format(value, "f"))}  # written as computed: "36.0" keeps its place
    if definition.get("type") == "integer" and value == value.to_integral_value():
        return {"valueInteger": int(value)}
    return None  # a fraction for an integer item, or a type the expression gives no number for: left out


def _answers(questionnaire: dict[str, Any], response: dict[str, Any]) -> Answers:
    answers: Answers = {}
    for link_id, value, definition in calculated_values(questionnaire, response):
        if value is None or not is_enabled(definition, response, questionnaire):
            continue  # an empty calculation is no answer; a disabled item takes none
        if (answer := typed_answer(definition, value)) is not None:
            answers[link_id] = answer
    return answers


def _merge(defined: list[dict[str, Any]], given: list[Any], answers: Answers) -> list[Any]:
    """``given`` (one level of response items) in ``defined``'s order with the calculated answers placed."""
    if not answers:
        return list(given)
    present: dict[Any, list[Any]] = {}
    for item in given:  # a repeating group appears more than once
        present.setdefault(item.get("linkId") if isinstance(item, dict) else None, []).append(item)
    out: list[Any] = []
    for definition in defined:
        link_id = definition.get("linkId")
        nodes = present.pop(link_id, [])
        if link_id in answers:  # the calculation, never a value from elsewhere
            out.append({"linkId": link_id, "answer": [dict(answers[link_id])]})
            continue
        below = _calculated_ids(definition.get("item") or []) & answers.keys()
        if not below:
            out.extend(nodes)
        elif nodes:
            out.extend(_merge_node(node, definition, answers) for node in nodes)
        elif definition.get("type") == "group":  # a group only its scores answer (if they sit under no question)
            group = _merge_node({"linkId": link_id}, definition, answers)
            if group["item"]:
                out.append(group)
    out.extend(item for items in present.values() for item in items)  # not in the Questionnaire: left as given
    return out


def _merge_node(node: dict[str, Any], definition: dict[str, Any], answers: Answers) -> dict[str, Any]:
    children = definition.get("item") or []
    node = dict(node)
    if definition.get("type") == "group":
        node["item"] = _merge(children, node.get("item") or [], answers)
    elif node.get("answer"):  # questions under a question hang off its answer (R4 QuestionnaireResponse)
        first = dict(node["answer"][0])
        first["item"] = _merge(children, first.get("item") or [], answers)
        node["answer"] = [first, *node["answer"][1:]]
    return node


def _calculated_ids(items: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for item in items:
        if extension_value(item, CALCULATED) is not None:
            found.add(item.get("linkId", ""))
        found |= _calculated_ids(item.get("item") or [])
    return found


def _expressions(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        expression = extension_value(item, CALCULATED)
        if isinstance(expression, dict):
            out.append(str(expression.get("expression", "")))
        out += _expressions(item.get("item") or [])
    return out


def _chained(questionnaire: dict[str, Any]) -> bool:
    """Does any variable or calculation name a calculated item (as ``linkId='total'``)?"""
    variables = [
        str((ext.get("valueExpression") or {}).get("expression", ""))
        for ext in questionnaire.get("extension") or ()
        if ext.get("url") == VARIABLE
    ]
    text = "\n".join(variables + _expressions(questionnaire.get("item") or []))
    ids = _calculated_ids(questionnaire.get("item") or [])
    return any(re.search(rf"""['"]{re.escape(link_id)}['"]""", text) for link_id in ids)

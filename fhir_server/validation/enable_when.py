"""Questionnaire.item.enableWhen (R4): is an item enabled, given the answers in a response?"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_server.scoring.scores import answers_by_link_id


def is_enabled(
    definition: dict[str, Any],
    response: dict[str, Any],
    questionnaire: dict[str, Any],
    answers: dict[str, list[dict[str, Any]]] | None = None,
) -> bool:
    """``answers``: ``answers_by_link_id(response)`` when the caller has it already (it walks the response)."""
    conditions = definition.get("enableWhen") or []
    if not conditions:
        return True
    if answers is None:
        answers = answers_by_link_id(response)
    results = [_holds(c, answers.get(c.get("question", ""), [])) for c in conditions]
    return any(results) if definition.get("enableBehavior") == "any" else all(results)


def _holds(condition: dict[str, Any], answers: list[dict[str, Any]]) -> bool:
    operator = condition.get("operator")
    expected_key = next((k for k in condition if k.startswith("answer")), None)
    expected = condition.get(expected_key) if expected_key else None
    if operator == "exists":
        return bool(answers) == bool(expected)
    values = [a[k] for a in answers for k in a if k.startswith("value")]
    if operator == "=":
        return any(_equal(v, expected) for v in values)
    if operator == "!=":
        return not any(_equal(v, expected) for v in values) if values else True
    comparisons = {
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
    }
    compare = comparisons.get(operator or "")
    return compare is not None and any(_ordered(v, expected, compare) for v in values)


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(value, dict) and isinstance(expected, dict):  # Coding
        same_system = value.get("system") == expected.get("system") or not expected.get("system")
        return same_system and value.get("code") == expected.get("code")
    return value == expected


def _ordered(value: Any, expected: Any, compare: Any) -> bool:
    try:
        if isinstance(value, str) and isinstance(expected, str):
            return bool(compare(value, expected))
        return bool(compare(Decimal(str(value)), Decimal(str(expected))))
    except (InvalidOperation, TypeError):
        return False

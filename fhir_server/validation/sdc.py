"""SDC expression support: extension lookup and evaluation of variables and calculatedExpressions with
fhirpathpy, exactly as an SDC renderer would (so the server's check and a renderer's score agree).  The shapes our
Questionnaires use are evaluated natively with the same results (``sdc_fast.py``): fhirpathpy is the slow part of
every WAI-SR submission."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhir_server.validation import sdc_fast

VARIABLE = "http://hl7.org/fhir/StructureDefinition/variable"
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
_R4 = models["r4"]


def extension_value(element: dict[str, Any], url: str) -> Any:
    for ext in element.get("extension") or ():
        if ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


@cache
def _compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression, model=_R4)


class ExpressionFailed(Exception):
    """FHIRPath could not evaluate an expression on this response (e.g. two answers where one is expected)."""


def evaluate(
    expression: str,
    response: dict[str, Any],
    questionnaire: dict[str, Any],
    env: dict[str, Any],
    roots: sdc_fast.Roots | None = None,
) -> list:
    """``roots``: shared by the expressions evaluated on the same response and Questionnaire (sdc_fast.Roots)."""
    try:
        fast = sdc_fast.evaluate(expression, response, questionnaire, env, roots)
    except sdc_fast.WouldRaise as exc:
        raise ExpressionFailed(f"{expression[:80]}: {exc}") from None
    if fast is not None:
        return fast
    try:  # a shape sdc_fast does not know, or data it leaves to fhirpathpy
        return _compiled(expression)(response, {"resource": response, "questionnaire": questionnaire, **env})
    except Exception as exc:  # fhirpathpy raises bare Exceptions on type errors
        raise ExpressionFailed(f"{expression[:80]}: {exc}") from None


def variables(
    questionnaire: dict[str, Any], response: dict[str, Any], roots: sdc_fast.Roots | None = None
) -> dict[str, Any]:
    """Root-level variables, in order (later ones may use earlier ones)."""
    roots = roots or sdc_fast.Roots(response, questionnaire)
    env: dict[str, Any] = {}
    for ext in questionnaire.get("extension") or ():
        if ext.get("url") == VARIABLE:
            expression = ext.get("valueExpression") or {}
            if expression.get("language") == "text/fhirpath" and expression.get("name"):
                try:
                    env[expression["name"]] = evaluate(expression["expression"], response, questionnaire, env, roots)
                except ExpressionFailed:
                    env[expression["name"]] = []
    return env


def _calculated_items(items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    for item in items or ():
        expression = extension_value(item, CALCULATED)
        if isinstance(expression, dict) and expression.get("language") == "text/fhirpath":
            yield item, expression["expression"]
        yield from _calculated_items(item.get("item") or [])


def calculated_values(
    questionnaire: dict[str, Any], response: dict[str, Any], only: set[str] | None = None
) -> list[tuple[str, Decimal | None, dict[str, Any]]]:
    """(linkId, value or None when the calculation is empty, item definition) for every calculated item that
    can be evaluated (a response malformed enough to break an expression is refused for that reason already)."""
    wanted = [
        (item, expression)
        for item, expression in _calculated_items(questionnaire.get("item") or [])
        if only is None or item["linkId"] in only
    ]
    if not wanted:
        return []  # FHIRPath is the slow part: skip it when no calculated item is asked for
    roots = sdc_fast.Roots(response, questionnaire)
    env = variables(questionnaire, response, roots)
    out = []
    for item, expression in wanted:
        try:
            result = evaluate(expression, response, questionnaire, env, roots)
        except ExpressionFailed:
            continue
        value = result[0] if result else None
        out.append((item["linkId"], Decimal(str(value)) if isinstance(value, int | float | Decimal) else None, item))
    return out

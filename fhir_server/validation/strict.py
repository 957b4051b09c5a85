"""The strict walk: one pass over a resource's JSON that checks what pydantic (lax) lets through, for every
resource type and element, from the per-type tables of ``elements.py``:

- JSON types (R4 §2.6.2 JSON representation): integer / positiveInt / unsignedInt are JSON integers in range
  (not ``"1"``, ``85.0`` or ``true``), boolean is ``true``/``false``, decimal a JSON number, every other primitive a
  JSON string — 400 ``value``;
- required bindings (``Observation.status = "done"``) — 400 ``code-invalid``;
- Reference.reference, canonical, uri and base64Binary syntax (``formats.py``) — 400 ``value``;
- the narrative's XHTML, txt-1 / txt-2 (``narrative.py``) — 400 ``invariant``;
- ``fhir_comments``, which fhir.resources accepts and R4 does not have, and empty arrays and objects (R4 §2.6.2) —
  400 ``structure``; empty strings — 400 ``value``.

Each issue names the element by FHIRPath (``QuestionnaireResponse.item[0].answer[0].valueInteger``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server import models
from fhir_server.errors import Issue
from fhir_server.fhirjson import FhirDecimal
from fhir_server.validation.elements import Element, elements
from fhir_server.validation.formats import base64_problem, canonical_problem, reference_problem, uri_problem
from fhir_server.validation.narrative import narrative_problems

MAX_ISSUES = 20
_INT32 = 2**31 - 1


def check_elements(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Every strict-walk issue in ``resource`` (at most MAX_ISSUES), in document order."""
    issues: list[Issue] = []
    _walk(models.model_class(resource_type), resource_type, resource, resource_type, issues)
    return issues


def _walk(model: type, element_path: str, node: dict[str, Any], where: str, issues: list[Issue]) -> None:
    table = elements(model, element_path)
    for key, value in node.items():
        element = table.get(key)
        if element is None:  # resourceType, or an unknown key pydantic has refused already
            continue
        if element.kind == "unknown":
            path = f"{where}.{key}"
            issues.append(Issue("structure", f"{path}: Unknown element (not part of FHIR R4)", expression=[path]))
        elif value == [] or value == {} or value == "":  # R4 JSON: no empty arrays, objects or strings
            path = f"{where}.{key}"
            code = "value" if value == "" else "structure"
            issues.append(Issue(code, f"{path}: empty values are not allowed in FHIR JSON", expression=[path]))
        elif type(value) is list:
            for index, item in enumerate(value):
                if item is not None:  # null aligns a primitive array with its _element twin
                    _check(element, item, f"{where}.{key}[{index}]", issues)
        else:
            _check(element, value, f"{where}.{key}", issues)
        if len(issues) >= MAX_ISSUES:
            return


def _check(element: Element, value: Any, where: str, issues: list[Issue]) -> None:
    kind = element.kind
    if value == {} or value == "":  # inside an array (a whole empty array is refused by _walk)
        code = "value" if value == "" else "structure"
        issues.append(Issue(code, f"{where}: empty values are not allowed in FHIR JSON", expression=[where]))
        return
    if kind == "complex":
        if type(value) is dict and element.model is not None:
            _walk(element.model, element.path, value, where, issues)
        return
    if kind == "resource":
        inner = value.get("resourceType") if type(value) is dict else None
        if type(inner) is str and models.is_resource_type(inner):
            _walk(models.model_class(inner), inner, value, where, issues)
        return
    problem = _CHECKS[kind](value)
    if problem is not None:
        code, message = problem
        issues.append(Issue(code, f"{where}: {message}", expression=[where]))
    elif element.codes is not None and value not in element.codes:
        issues.append(
            Issue(
                "code-invalid",
                f"{where}: '{value[:64]}' is not in the required value set for {element.path}",
                expression=[where],
            )
        )


Problem = tuple[str, str] | None


def _integer(low: int, name: str) -> Callable[[Any], Problem]:
    def check(value: Any) -> Problem:
        # type() and not isinstance(): bool is an int subclass and FhirDecimal (85.0) a float one.
        if type(value) is not int:
            return "value", f"{name} must be a JSON integer, not {_json_type(value)}"
        if not low <= value <= _INT32:
            return "value", f"{value} is outside the range of {name} ({low}..{_INT32})"
        return None

    return check


def _decimal(value: Any) -> Problem:
    if type(value) is int or type(value) is FhirDecimal or type(value) is float:
        return None
    return "value", f"decimal must be a JSON number, not {_json_type(value)}"


def _boolean(value: Any) -> Problem:
    return None if type(value) is bool else ("value", f"boolean must be JSON true or false, not {_json_type(value)}")


def _string_then(check: Callable[[str], str | None] | None, name: str) -> Callable[[Any], Problem]:
    def run(value: Any) -> Problem:
        if type(value) is not str:
            return "value", f"must be a JSON string ({name}), not {_json_type(value)}"
        problem = check(value) if check is not None else None
        return None if problem is None else ("value", problem)

    return run


def _xhtml(value: Any) -> Problem:
    if type(value) is not str:
        return "value", f"the narrative must be a JSON string, not {_json_type(value)}"
    problems = narrative_problems(value)
    if not problems:
        return None
    return "invariant", "; ".join(f"{invariant}: {reason}" for invariant, reason in problems)


def _json_type(value: Any) -> str:
    if type(value) is bool:
        return "a boolean"
    if type(value) is str:
        return "a string"
    if type(value) is int:
        return "an integer"
    if isinstance(value, float):
        return "a number with a decimal point"
    return "an object" if type(value) is dict else "an array" if type(value) is list else "another type"


_CHECKS: dict[str, Callable[[Any], Problem]] = {
    "integer": _integer(-_INT32 - 1, "integer"),
    "unsignedInt": _integer(0, "unsignedInt"),
    "positiveInt": _integer(1, "positiveInt"),
    "decimal": _decimal,
    "boolean": _boolean,
    "string": _string_then(None, "string"),
    "uri": _string_then(uri_problem, "uri"),
    "canonical": _string_then(canonical_problem, "canonical"),
    "reference": _string_then(reference_problem, "Reference.reference"),
    "base64Binary": _string_then(base64_problem, "base64Binary"),
    "xhtml": _xhtml,
}

"""Structural validation of one resource (R4 rules on top of the fhir.resources R4B models).

Every write, every transaction or batch entry, PATCH result and $validate comes through ``validate_resource``:
pydantic checks shape, cardinality and formats; then the strict walk (``strict.py``) checks what pydantic coerces
or lets through (JSON types, required bindings, reference / canonical syntax, narrative XHTML).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from fhir_server import models
from fhir_server.errors import FhirError, Issue
from fhir_server.validation.strict import check_elements

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# pydantic error types → FHIR IssueType codes
_ISSUE_CODE_FOR = {
    "extra_forbidden": "structure",
    "missing": "required",
    "model_field_validation.missing": "required",
    "model_type": "structure",
    "list_type": "structure",
    "dict_type": "structure",
}
MAX_ISSUES = 20


def check_id(resource_id: str, where: str = "id") -> None:
    if not ID_PATTERN.fullmatch(resource_id):
        raise FhirError(
            400,
            "value",
            f"Invalid id '{resource_id[:80]}': ids are 1-64 of [A-Za-z0-9-.]",
            expression=[where],
        )


def validate_resource(resource: Any, expected_type: str | None = None) -> str:
    """Validate a parsed JSON resource; return its type.  Raises FhirError with every issue found."""
    if not isinstance(resource, dict):
        raise FhirError(400, "structure", "The body must be a JSON object holding a FHIR resource")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError(400, "structure", "The resource has no 'resourceType'", expression=["resourceType"])
    if not models.is_resource_type(resource_type):
        raise FhirError(400, "not-supported", f"Unknown resource type '{resource_type[:64]}'")
    if expected_type is not None and resource_type != expected_type:
        raise FhirError(400, "invalid", f"Resource type '{resource_type}' does not match the URL's '{expected_type}'")
    if "id" in resource:
        if not isinstance(resource["id"], str):
            raise FhirError(400, "value", "'id' must be a string", expression=[f"{resource_type}.id"])
        check_id(resource["id"], f"{resource_type}.id")

    try:
        models.model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        issues = _issues(resource_type, exc)
        raise FhirError(400, issues[0].code, issues[0].diagnostics, issues=issues) from None
    strict_issues = check_elements(resource_type, resource)
    if strict_issues:
        raise FhirError(400, strict_issues[0].code, strict_issues[0].diagnostics, issues=strict_issues)
    return resource_type


def _issues(resource_type: str, exc: ValidationError) -> list[Issue]:
    issues = []
    for error in exc.errors()[:MAX_ISSUES]:
        path = _fhirpath(resource_type, error.get("loc", ()))
        code = _ISSUE_CODE_FOR.get(error["type"], "value")
        message = error.get("msg", "invalid")
        if error["type"] == "extra_forbidden":
            message = "Unknown element (not part of FHIR R4)"
        issues.append(Issue(code, f"{path}: {message}", expression=[path]))
    issues.sort(key=lambda i: {"structure": 0, "required": 1}.get(i.code, 2))
    return issues


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "[")):
            path += f".{part}"
    return path

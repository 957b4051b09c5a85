"""[type]/$validate and [type]/[id]/$validate (R4 Resource-validate): structural validation of any resource,
and for a QuestionnaireResponse the check against its Questionnaire.  Answers an OperationOutcome; nothing is
stored."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson, models
from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.operations.base import Operation, OperationContext, definition, param
from fhir_server.validation import validate_resource


def _resource(ctx: OperationContext) -> Any:
    body = ctx.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"]
        body = found[0] if found else None
    if body is None and ctx.resource_id is not None:
        body = fhirjson.loads_stored(ctx.fhir.read(ctx.resource_type or "", ctx.resource_id).content or "{}")
    if body is None:
        raise FhirError(400, "required", "POST the resource to validate (or a Parameters with 'resource')")
    return body


def validate(ctx: OperationContext) -> dict[str, Any]:
    resource = _resource(ctx)
    try:
        resource_type = validate_resource(resource, ctx.resource_type)
        if resource_type == "QuestionnaireResponse":
            ctx.fhir.check_response(None, resource)
    except FhirError as err:
        if err.status >= 500:
            raise
        return operation_outcome(err.issues)
    return operation_outcome([Issue("informational", "Validation passed: no issues found", severity="information")])


OPERATION = Operation(
    "validate",
    definition(
        "validate",
        title="Validate a resource",
        description="Structural validation of a resource; a QuestionnaireResponse is also checked against its "
        "Questionnaire (linkIds, answer types, ranges, options, required and enabled items, calculated scores).",
        resources=sorted(models.R4_RESOURCE_TYPES),
        type_level=True,
        instance=True,
        parameters=[param("resource", "in", "Resource"), param("return", "out", "OperationOutcome", min_=1)],
    ),
    validate,
)

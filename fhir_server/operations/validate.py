"""[type]/$validate and [type]/[id]/$validate (R4 Resource-validate): structural validation of any resource,
and for a QuestionnaireResponse the check against its Questionnaire.  Answers an OperationOutcome; nothing is
stored."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson, models
from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.operations.base import HL7, OperationContext, standard
from fhir_server.validation.resource import check

OPERATION_PARAMETERS = frozenset({"resource", "mode", "profile"})


def _resource(ctx: OperationContext) -> Any:
    body = ctx.body
    if _is_wrapper(ctx.resource_type, body):
        found = [p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"]
        body = found[0] if found else None
    if body is None and ctx.resource_id is not None:
        body = fhirjson.loads_stored(ctx.fhir.read(ctx.resource_type or "", ctx.resource_id).content or "{}")
    if body is None:
        raise FhirError(400, "required", "POST the resource to validate (or a Parameters with 'resource')")
    return body


def _is_wrapper(resource_type: str | None, body: Any) -> bool:
    """A Parameters body carries the resource in 'resource' — except at Parameters/$validate, where a Parameters
    is the resource itself unless its only parameters are the operation's own."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return False
    if resource_type != "Parameters":
        return True
    names = {p.get("name") for p in body.get("parameter") or () if isinstance(p, dict)}
    return "resource" in names and names <= OPERATION_PARAMETERS


def validate(ctx: OperationContext) -> dict[str, Any]:
    resource = _resource(ctx)
    try:
        # query or wrapper parameters; a Parameters being validated carries its own, not the operation's
        profile = (
            None
            if ctx.resource_type == "Parameters" and not _is_wrapper("Parameters", ctx.body)
            else ctx.one("profile")
        )
        report = check(resource, ctx.resource_type, ctx.fhir.validation, profile)
        issues = list(report.issues)
        if not report.errors and report.resource_type == "QuestionnaireResponse":
            issues += _answers(ctx, resource)
    except FhirError as err:
        if err.status >= 500:
            raise
        return operation_outcome(err.issues)
    if not any(issue.severity in ("error", "fatal", "warning") for issue in issues):
        issues.insert(0, Issue("informational", "Validation passed: no errors found", severity="information"))
    return operation_outcome(issues)


def _answers(ctx: OperationContext, response: dict[str, Any]) -> list[Issue]:
    """The answers against the Questionnaire, as create and update check them; a warning when it is unknown."""
    try:
        if ctx.fhir.check_response(None, response) is None:
            return [
                Issue(
                    "not-found",
                    "QuestionnaireResponse.questionnaire: the Questionnaire is not known to this server, so the "
                    "answers were not checked against it (a create stores the response without scoring it)",
                    severity="warning",
                    expression=["QuestionnaireResponse.questionnaire"],
                )
            ]
    except FhirError as err:
        if err.status >= 500:
            raise
        return err.issues
    return []


OPERATION = standard(
    "validate",
    validate,
    canonicals={"*": f"{HL7}/Resource-validate"},
    resources=sorted(models.R4_RESOURCE_TYPES),
    levels={"type", "instance"},
    documentation="Against the R4 definitions (structure, cardinality, primitives, bindings, invariants, extensions, "
    "references, Bundle rules), the profiles the resource claims or `profile` names (one the server holds; any other "
    "is an error, `not-supported`); `mode` create, update or delete is accepted and checked alike.  A "
    "QuestionnaireResponse is also checked against its Questionnaire.  Nothing is stored.",
)

"""QuestionnaireResponse/$extract (SDC observation-based extraction, as scored by this server): the transaction
Bundle of Observations and Flags that scoring would write for a posted or a stored response, without writing it.
Entries are conditional creates on the results' identifiers, so an EHR can apply the Bundle more than once."""

from __future__ import annotations

import uuid
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.operations.base import SDC, OperationContext, standard
from fhir_server.validation import validate_resource


def _response(ctx: OperationContext) -> dict[str, Any]:
    body = ctx.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [p.get("resource") for p in body.get("parameter", []) if p.get("name") == "questionnaire-response"]
        body = found[0] if found else None
    if body is None and ctx.resource_id is not None:
        return fhirjson.loads_stored(ctx.fhir.read("QuestionnaireResponse", ctx.resource_id).content or "{}")
    if not isinstance(body, dict) or body.get("resourceType") != "QuestionnaireResponse":
        raise FhirError(400, "required", "POST a QuestionnaireResponse (or Parameters with 'questionnaire-response')")
    return body


def extract(ctx: OperationContext) -> dict[str, Any]:
    response = _response(ctx)
    validate_resource(response, "QuestionnaireResponse")
    questionnaire = ctx.fhir.check_response(None, response)
    if questionnaire is None:
        raise FhirError(
            422, "not-found", "The response's Questionnaire is not known to this server: nothing to extract"
        )
    pipeline = ctx.fhir.scoring
    rules = pipeline.rules_for(response)
    if rules is None:
        raise FhirError(422, "not-supported", "This Questionnaire has no scoring rules: nothing to extract")
    if response.get("status") not in ("completed", "amended"):
        raise FhirError(422, "business-rule", "Only completed or amended responses are scored")
    response = {**response, "id": response.get("id") or f"extract-{uuid.uuid4().hex[:12]}"}
    observations, flags, _, _ = ctx.fhir.repo.snapshot(
        lambda session: pipeline.results(session, rules, response, questionnaire)
    )
    entries = []
    for resource in [*observations, *flags]:
        identifier = resource["identifier"][0]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": f"identifier={identifier['system']}|{identifier['value']}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


OPERATION = standard(
    "extract",
    extract,
    canonicals={"*": f"{SDC}/QuestionnaireResponse-extract"},
    resources=["QuestionnaireResponse"],
    levels={"type", "instance"},
    documentation="Observation-based extraction as this server scores: for a completed or amended response to one "
    "of the library's scored measures (posted as `questionnaire-response`, or stored), the transaction Bundle of the "
    "Observations and Flags scoring writes, as conditional creates on their identifiers.  Nothing is stored.",
    reveals=("Observation", "Flag"),
)

"""Routes for $operations at system, type and instance level, driven by the operation registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.api.http import base_url, json_response, read_json, response_media_type
from fhir_server.deps import FhirDep
from fhir_server.engine.interactions import require_type
from fhir_server.errors import FhirError
from fhir_server.operations import OPERATIONS, Answer, Operation, OperationContext

router = APIRouter()


def _find(name: str, level: str, resource_type: str | None) -> Operation:
    operation = OPERATIONS.get(name)
    if operation is None or level not in operation.levels:
        raise FhirError(404, "not-supported", f"Operation ${name[:64]} is not supported at {level} level")
    if resource_type is not None and resource_type not in operation.resources:
        raise FhirError(404, "not-supported", f"Operation ${name} is not defined for {resource_type}")
    return operation


def _parameters(body: Any) -> list[tuple[str, str]]:
    """Primitive-valued Parameters.parameter entries as (name, value) pairs."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return []
    pairs = []
    for parameter in body.get("parameter", []):
        for key, value in parameter.items():
            if key.startswith("value") and isinstance(value, str | int | float | bool):
                pairs.append((parameter.get("name", ""), str(value).lower() if isinstance(value, bool) else str(value)))
    return pairs


async def _invoke(
    request: Request, fhir: FhirDep, name: str, level: str, resource_type: str | None, resource_id: str | None
) -> Response:
    response_media_type(request)
    if resource_type is not None:
        require_type(resource_type)
    operation = _find(name, level, resource_type)
    body = None
    if request.method == "POST":
        body = await read_json(request)
    elif operation.affects_state:
        raise FhirError(405, "not-supported", f"${name} changes data and must be invoked with POST")
    fhir.check_operation(name, operation.reveals, body)
    params = list(request.query_params.multi_items()) + _parameters(body)
    path = "/".join(p for p in (resource_type, resource_id, f"${name}") if p)
    base = base_url(request)
    query = f"?{request.url.query}" if request.url.query else ""
    prefer, request_url = request.headers.get("prefer", ""), f"{base}/{path}{query}"
    context = OperationContext(
        fhir, base, resource_type, resource_id, params, body, path, prefer=prefer, request_url=request_url
    )
    result = await run_in_threadpool(operation.handler, context)
    if isinstance(result, Answer):
        return json_response(request, result.body, result.status, result.headers)
    return json_response(request, result)


@router.api_route("/${name}", methods=["GET", "POST"])
async def system_operation(name: str, request: Request, fhir: FhirDep) -> Response:
    return await _invoke(request, fhir, name, "system", None, None)


@router.api_route("/{resource_type}/${name}", methods=["GET", "POST"])
async def type_operation(resource_type: str, name: str, request: Request, fhir: FhirDep) -> Response:
    return await _invoke(request, fhir, name, "type", resource_type, None)


@router.api_route("/{resource_type}/{resource_id}/${name}", methods=["GET", "POST"])
async def instance_operation(
    resource_type: str, resource_id: str, name: str, request: Request, fhir: FhirDep
) -> Response:
    return await _invoke(request, fhir, name, "instance", resource_type, resource_id)

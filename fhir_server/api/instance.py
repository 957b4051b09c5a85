"""Instance-level interactions: read, vread, update, patch, delete, instance history (a Binary's content itself:
api/binary.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.api import binary, result_bundles
from fhir_server.api import history as history_api
from fhir_server.api.http import (
    PATCH_TYPE,
    json_response,
    prefer_strict,
    read_json,
    response_media_type,
    version_headers,
    write_response,
)
from fhir_server.deps import FhirDep
from fhir_server.errors import info_outcome
from fhir_server.search.fhirdate import parse_http_date

router = APIRouter()


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(resource_type: str, resource_id: str, version_id: str, request: Request, fhir: FhirDep) -> Response:
    content = binary.wants_content(request, resource_type)
    if not content:
        response_media_type(request)
    stored = fhir.vread(resource_type, resource_id, version_id)
    if content:
        return binary.content_response(stored, version_headers(stored, request))
    return json_response(request, stored.content or "{}", headers=version_headers(stored, request))


@router.get("/{resource_type}/{resource_id}/_history")
def instance_history(resource_type: str, resource_id: str, request: Request, fhir: FhirDep) -> Response:
    fhir.require_known(resource_type, resource_id)
    return history_api.respond(request, fhir, resource_type=resource_type, resource_id=resource_id)


@router.get("/{resource_type}/{resource_id}/{member_type}")
def compartment_search(
    resource_type: str, resource_id: str, member_type: str, request: Request, fhir: FhirDep
) -> Response:
    """``/Patient/{id}/Observation?...``: a search confined to the compartment (R4 §3.1.1.3)."""
    response_media_type(request)
    params = list(request.query_params.multi_items())
    query = fhir.compartment_query(resource_type, resource_id, member_type, params, strict=prefer_strict(request))
    path = f"{resource_type}/{resource_id}/{member_type}"
    return json_response(request, result_bundles.searchset(request, path, params, fhir.search(query)))


@router.get("/{resource_type}/{resource_id}")
def read(request: Request, fhir: FhirDep) -> Response:
    # The path's two strings straight from the matched route: FastAPI's validation of them was ~40 µs of a read.
    resource_type, resource_id = request.path_params["resource_type"], request.path_params["resource_id"]
    content = binary.wants_content(request, resource_type)
    if not content:
        response_media_type(request)
    stored = fhir.read(resource_type, resource_id)
    headers = version_headers(stored, request)
    tags = {t.strip() for t in request.headers.get("if-none-match", "").split(",") if t.strip()}
    if "*" in tags or stored.etag in tags or stored.etag[2:] in tags:
        return Response(status_code=304, headers=headers)
    since = parse_http_date(request.headers.get("if-modified-since", ""))
    if since is not None and stored.last_updated.replace(microsecond=0) <= since:
        return Response(status_code=304, headers=headers)
    if content:
        return binary.content_response(stored, headers)
    return json_response(request, stored.content or "{}", headers=headers)


@router.put("/{resource_type}/{resource_id}")
async def update(resource_type: str, resource_id: str, request: Request, fhir: FhirDep) -> Response:
    response_media_type(request)
    body = await binary.read_resource(request, resource_type, resource_id)
    if_match = request.headers.get("if-match")
    result = await run_in_threadpool(
        fhir.repo.write, lambda s: fhir.update(s, resource_type, resource_id, body, if_match=if_match)
    )
    status = 201 if result.created else 200
    message = "Resource created" if status == 201 else "Resource updated"
    return write_response(request, result.stored, status, message=message, notes=result.notes, warnings=result.warnings)


@router.patch("/{resource_type}/{resource_id}")
async def patch(resource_type: str, resource_id: str, request: Request, fhir: FhirDep) -> Response:
    response_media_type(request)
    operations = await read_json(request, (PATCH_TYPE,))
    if_match = request.headers.get("if-match")
    result = await run_in_threadpool(
        fhir.repo.write, lambda s: fhir.patch(s, resource_type, resource_id, operations, if_match=if_match)
    )
    return write_response(request, result.stored, 200, message="Resource patched", warnings=result.warnings)


@router.delete("/{resource_type}/{resource_id}")
async def delete(resource_type: str, resource_id: str, request: Request, fhir: FhirDep) -> Response:
    response_media_type(request)
    deleted = await run_in_threadpool(fhir.repo.write, lambda s: fhir.delete(s, resource_type, resource_id))
    if deleted is None:
        return json_response(request, info_outcome(f"{resource_type}/{resource_id} was already absent"), 200)
    headers = {"ETag": deleted.etag}
    return json_response(request, info_outcome(f"Deleted {resource_type}/{resource_id}"), 200, headers)

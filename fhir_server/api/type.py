"""Type-level interactions: create (plain and conditional), search, conditional update/patch/delete, history."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.api import binary, result_bundles
from fhir_server.api import history as history_api
from fhir_server.api.http import (
    PATCH_TYPE,
    json_response,
    prefer_strict,
    read_body,
    read_json,
    response_media_type,
    write_response,
)
from fhir_server.deps import FhirDep
from fhir_server.engine.interactions import require_type
from fhir_server.errors import FhirError, info_outcome

router = APIRouter()


def _criteria(request: Request, what: str) -> str:
    criteria = str(request.url.query)
    if not criteria:
        raise FhirError(400, "invalid", f"A {what} needs search criteria in the query string")
    return criteria


def _search(resource_type: str, params: list[tuple[str, str]], request: Request, fhir: FhirDep) -> Response:
    response_media_type(request)
    query = fhir.parse_query(resource_type, params, strict=prefer_strict(request))
    result = fhir.search(query)
    return json_response(request, result_bundles.searchset(request, resource_type, params, result))


@router.get("/{resource_type}/_history")
def type_history(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    return history_api.respond(request, fhir, resource_type=require_type(resource_type))


@router.post("/{resource_type}/_search")
async def search_post(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise FhirError(415, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters")
    body = (await read_body(request)).decode("utf-8", errors="replace")
    params = list(request.query_params.multi_items()) + parse_qsl(body, keep_blank_values=True)
    return await run_in_threadpool(_search, resource_type, params, request, fhir)


@router.get("/{resource_type}")
def search(request: Request, fhir: FhirDep) -> Response:
    # The type straight from the matched route, as api/instance.read takes its path (no per-request validation).
    params = list(request.query_params.multi_items())
    return _search(request.path_params["resource_type"], params, request, fhir)


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    require_type(resource_type)
    response_media_type(request)
    body = await binary.read_resource(request, resource_type)
    if_none_exist = request.headers.get("if-none-exist")
    # optimistic: on SQLite the work runs before the writer's turn (Repository.write); elsewhere it changes nothing.
    result = await run_in_threadpool(
        fhir.repo.write, lambda s: fhir.create(s, resource_type, body, if_none_exist=if_none_exist), optimistic=True
    )
    if result.existing:
        return write_response(request, result.stored, 200, message="A matching resource already exists")
    return write_response(
        request, result.stored, 201, message="Resource created", notes=result.notes, warnings=result.warnings
    )


@router.put("/{resource_type}")
async def conditional_update(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    require_type(resource_type)
    response_media_type(request)
    criteria = _criteria(request, "conditional update")
    body = await binary.read_resource(request, resource_type)
    if_match = request.headers.get("if-match")
    result = await run_in_threadpool(
        fhir.repo.write,
        lambda s: fhir.conditional_update(s, resource_type, criteria, body, if_match=if_match),
    )
    status = 201 if result.created else 200
    message = "Resource created" if status == 201 else "Resource updated"
    return write_response(request, result.stored, status, message=message, notes=result.notes, warnings=result.warnings)


@router.patch("/{resource_type}")
async def conditional_patch(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    require_type(resource_type)
    response_media_type(request)
    criteria = _criteria(request, "conditional patch")
    operations = await read_json(request, (PATCH_TYPE,))
    if_match = request.headers.get("if-match")

    def work(session):  # type: ignore[no-untyped-def]
        match = fhir.single_match(session, resource_type, criteria, "conditional patch")
        return fhir.patch(session, resource_type, match.id, operations, if_match=if_match)

    result = await run_in_threadpool(fhir.repo.write, work)
    return write_response(request, result.stored, 200, message="Resource patched", warnings=result.warnings)


@router.delete("/{resource_type}")
async def conditional_delete(resource_type: str, request: Request, fhir: FhirDep) -> Response:
    require_type(resource_type)
    response_media_type(request)
    criteria = _criteria(request, "conditional delete")
    deleted = await run_in_threadpool(fhir.repo.write, lambda s: fhir.conditional_delete(s, resource_type, criteria))
    if deleted is None:
        return json_response(request, info_outcome("No resource matched; nothing was deleted"), 200)
    return json_response(request, info_outcome(f"Deleted {resource_type}/{deleted.id}"), 200, {"ETag": deleted.etag})

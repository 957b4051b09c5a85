"""System-level interactions: capabilities, batch/transaction, system history."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.api import history as history_api
from fhir_server.api.capability import capability_statement
from fhir_server.api.http import base_url, json_response, prefer_return, read_json, response_media_type
from fhir_server.auth import urls
from fhir_server.deps import FhirDep, PublicFhirDep
from fhir_server.engine.transactions import BundleProcessor
from fhir_server.operations import declared

router = APIRouter()


@router.get("/metadata")
def metadata(request: Request, fhir: PublicFhirDep) -> Response:
    response_media_type(request)
    fhir.custom.refresh_if_stale()  # SearchParameters written a moment ago are listed at once
    settings = fhir.settings
    auth_base = urls.issuer(settings, str(request.base_url)) if settings.auth_required else None
    statement = capability_statement(fhir.registry, base_url(request), auth_base, declared(settings))
    return json_response(request, statement)


@router.get("/_history")
def system_history(request: Request, fhir: FhirDep) -> Response:
    return history_api.respond(request, fhir)


@router.post("")
@router.post("/")
async def batch_or_transaction(request: Request, fhir: FhirDep) -> Response:
    response_media_type(request)
    bundle = await read_json(request)
    processor = BundleProcessor(fhir, base_url(request), return_resources=prefer_return(request) == "representation")
    return json_response(request, await run_in_threadpool(processor.process, bundle))

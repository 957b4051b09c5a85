"""A Bulk Data export after its kick-off (operations/export.py): the status URL (GET: progress, then the manifest;
DELETE: cancel and remove the files) and the files.  Each needs a token of the client, user and patient that
asked; any other caller is answered as if there were no such export (export/jobs.py)."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from fhir_server import fhirjson
from fhir_server.api.http import base_url, json_response, response_media_type
from fhir_server.auth.audit import Access
from fhir_server.auth.policy import Policy
from fhir_server.deps import CallerDep
from fhir_server.errors import Issue, info_outcome, not_found, operation_outcome
from fhir_server.export import jobs

router = APIRouter()
NDJSON = "application/fhir+ndjson"


@router.get("/_export/{job_id}")
async def export_status(job_id: str, request: Request, caller: CallerDep) -> Response:
    response_media_type(request)
    state = request.app.state
    job = await run_in_threadpool(jobs.for_caller, state.engine, job_id, caller)
    if job.active:
        retry = str(state.settings.export_retry_after_seconds)
        return Response(status_code=202, headers={"X-Progress": job.progress(), "Retry-After": retry})
    if job.failed:
        outcome = operation_outcome([Issue("processing", f"The export failed: {job.error or 'unknown reason'}")])
        return json_response(request, outcome, 500)
    headers = {"Expires": format_datetime(job.expires_at.replace(tzinfo=UTC), usegmt=True)} if job.expires_at else {}
    # Bulk Data 2.0: the manifest is plain JSON (application/json), not a FHIR resource
    body = fhirjson.dumps(jobs.manifest(job, base_url(request)))
    return Response(body, status_code=200, media_type="application/json", headers=headers)


@router.delete("/_export/{job_id}")
async def export_cancel(job_id: str, request: Request, caller: CallerDep) -> Response:
    response_media_type(request)
    state = request.app.state
    job = await run_in_threadpool(jobs.for_caller, state.engine, job_id, caller)
    await run_in_threadpool(jobs.remove, state.engine, state.export_storage, job.id)
    done = "cancelled" if job.active else "removed with its files"
    return json_response(request, info_outcome(f"The export was {done}"), 202)


@router.get("/_export/{job_id}/{name}")
async def export_file(job_id: str, name: str, request: Request, caller: CallerDep) -> Response:
    state = request.app.state
    job = await run_in_threadpool(jobs.for_caller, state.engine, job_id, caller)
    entry = jobs.file_of(job, name)
    if entry is None:
        raise not_found("There is no such file in this export")
    resource_type = entry["type"]
    if caller.authenticated and resource_type != "OperationOutcome":
        Policy.for_caller(state.access, caller).require(resource_type, "r")  # this token must cover the file too
    chunks = state.export_storage.read(job.id, name)
    if chunks is None:  # removed between the lookup and now (expired, cancelled)
        raise not_found("There is no such file in this export")
    if caller.audited:
        patients = [caller.patient] if caller.patient else []
        description = f"$export file {name} of job {job.id}"
        state.audit.record(caller, Access("operation", description=description, patients=patients))
    return StreamingResponse(chunks, media_type=NDJSON)

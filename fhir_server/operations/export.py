"""``$export`` (FHIR Bulk Data Access 2.0) at system, ``Patient`` and ``Group/[id]`` level: the kick-off.

The request is checked in full before anything is queued (export/request.py), then becomes a durable job
(export/jobs.py) that the export worker runs; the answer is 202 Accepted with the status URL in
``Content-Location`` (api/export.py serves it, the manifest and the files).  Without ``Prefer: respond-async`` the
request is taken as asynchronous all the same (Bulk Data 2.0 allows either).
"""

from __future__ import annotations

from fhir_server.errors import FhirError, info_outcome
from fhir_server.export import jobs
from fhir_server.export.queries import ExportQueries
from fhir_server.export.request import ExportRequest, parse_request
from fhir_server.operations.base import Answer, OperationContext, standard

BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"


def kick_off(ctx: OperationContext) -> Answer:
    fhir = ctx.fhir
    level = _level(ctx)
    if level == "group":
        fhir.read("Group", ctx.resource_id or "")  # 404 as for a read: missing, deleted or not the caller's
    request = parse_request(
        level,
        ctx.resource_id if level == "group" else None,
        ctx.params,
        policy=fhir.policy,
        registry=fhir.registry,
        lenient="handling=lenient" in ctx.prefer.replace(" ", ""),
        posted_patient=_posts_patient(ctx),
    )
    _check_access(ctx, request)
    job = jobs.kick_off(fhir.repo, fhir.settings, fhir.policy.caller, request, ctx.request_url)
    location = f"{ctx.base_url}/_export/{job.id}"
    outcome = info_outcome(f"$export accepted: poll {location} for its status and manifest")
    return Answer(202, outcome, {"Content-Location": location})


def _level(ctx: OperationContext) -> str:
    if ctx.resource_type is None:
        return "system"
    if ctx.resource_type == "Patient" and ctx.resource_id is None:
        return "patient"
    if ctx.resource_type == "Group" and ctx.resource_id is not None:
        return "group"
    raise FhirError(404, "not-supported", "$export is defined at system level, on Patient and on Group/[id]")


def _posts_patient(ctx: OperationContext) -> bool:
    body = ctx.body
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return False
    return any(isinstance(p, dict) and p.get("name") == "patient" for p in body.get("parameter", []))


def _check_access(ctx: OperationContext, request: ExportRequest) -> None:
    """Every type's query under the caller's policy, built now as the job will build it: a scope the export
    needs and the token lacks (searching Patient, for a patient-level export) is a 403 now, not a failed job."""
    fhir = ctx.fhir
    if request.level != "system" and not fhir.policy.allows("Patient", "s"):
        raise FhirError(403, "forbidden", "$export: a Patient or Group export needs a scope to search Patient")
    queries = ExportQueries(request, fhir.policy, fhir.registry, [], set(request.types))
    for resource_type in request.types:
        queries.query(resource_type, 1)


OPERATION = standard(
    "export",
    kick_off,
    canonicals={"*": f"{BULK}/export", "Patient": f"{BULK}/patient-export", "Group": f"{BULK}/group-export"},
    resources=["Patient", "Group"],
    levels={"system", "type", "instance"},
    documentation="Bulk Data Access 2.0: GET or POST (Parameters) with `Prefer: respond-async`; 202 with the "
    "status URL in `Content-Location` (poll: 202 with `X-Progress` and `Retry-After`, then 200 with the manifest; "
    "DELETE cancels and removes the files). `_outputFormat` (application/fhir+ndjson), `_type`, `_since`, "
    "`_typeFilter` (search queries), `_elements` and `includeAssociatedData=RelevantProvenanceResources`; "
    "`patient` is not supported. `Prefer: handling=lenient` leaves out what cannot be honoured and reports it in "
    "the error file. Patient level: the Patient compartment of every patient the token may search; Group level: "
    "of the Group's active Patient members. Files need a token of the same client (and user or patient), and "
    "expire after a day. One export at a time per client.",
)

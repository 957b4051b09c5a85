"""``POST [base]/Patient/[id]/$expunge`` (the patient's whole record) and ``POST [base]/[type]/[id]/$expunge`` (one
resource, every version): erasure for good, as HAPI's ``$expunge`` and Medplum's hard delete give, for a client's
right to erasure where the law allows it and for removing test data.  The erasure itself is fhir_server/erasure/.

Who may: only when the server allows it (``FHIR_SERVER_EXPUNGE_ENABLED``; otherwise 403 whoever asks), and then
only a Backend Services token, holding the scope ``fhir-server/expunge`` and a ``system/`` scope that deletes the
type; a token acting for a patient or a user never (403).  With authorization off (development) the setting alone
governs.  A refusal is audited.  The answer is a Parameters of counts (``count``: resources removed, as HAPI's).
"""

from __future__ import annotations

from typing import Any

from fhir_server import models
from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access
from fhir_server.auth.guard import GuardedInteractions
from fhir_server.auth.scopes import EXPUNGE_SCOPE
from fhir_server.engine.admission import NOT_ACCEPTED
from fhir_server.erasure.expunge import ROW_KINDS, Erased, expunge_patient, expunge_resource
from fhir_server.errors import FhirError
from fhir_server.export.storage import DirectoryStorage
from fhir_server.operations.base import OperationContext, definition, own, param
from fhir_server.validation import check_id

DISABLED = "erasure ($expunge) is not enabled on this server"
# Every type but AuditEvent: the audit trail is not erased through the API (the retention setting removes the
# records of reads; an erasure renames what the trail names).
EXPUNGEABLE = sorted(models.R4_RESOURCE_TYPES - {"AuditEvent", *NOT_ACCEPTED})


def expunge(ctx: OperationContext) -> dict[str, Any]:
    fhir = ctx.fhir
    if not fhir.settings.expunge_enabled:
        raise _refused(ctx, DISABLED)
    resource_type, resource_id = ctx.resource_type or "", ctx.resource_id or ""
    _check_access(ctx, resource_type)
    check_id(resource_id)
    force = _force(ctx)
    caller = fhir.policy.caller
    if resource_type == "Patient":
        storage = DirectoryStorage(fhir.settings.export_dir)
        erased = expunge_patient(fhir, resource_id, caller, storage, force=force)
    else:
        erased = expunge_resource(fhir, (resource_type, resource_id), caller, force=force)
    return _answer(erased)


def _check_access(ctx: OperationContext, resource_type: str) -> None:
    caller = ctx.fhir.policy.caller
    if not caller.authenticated:
        return  # authorization off (local development): the setting alone governs
    if caller.patient or caller.fhir_user or caller.grant.contexts - {"system"}:
        raise _refused(ctx, "$expunge is for Backend Services clients: never for a token acting for a patient or user")
    if EXPUNGE_SCOPE not in caller.grant.other or not caller.grant.allows(resource_type, "d", "system"):
        raise _refused(
            ctx,
            f"$expunge needs a token with the scope {EXPUNGE_SCOPE} and a system/ scope that deletes {resource_type}",
            insufficient_scope=True,
        )


def _refused(ctx: OperationContext, message: str, *, insufficient_scope: bool = False) -> FhirError:
    fhir = ctx.fhir
    if isinstance(fhir, GuardedInteractions):  # an authenticated caller: the refusal joins the audit trail
        access = Access("operation", OUTCOME_MINOR_FAILURE, f"$expunge refused: {message}")
        access.client_address = fhir.client_address
        fhir.audit.record(fhir.caller, access)
    headers = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'} if insufficient_scope else None
    return FhirError(403, "forbidden", message, headers=headers)


def _force(ctx: OperationContext) -> bool:
    value = ctx.one("force")
    if value not in (None, "true", "false"):
        raise FhirError(400, "value", "force is a boolean: true drops the write-back deliveries still pending")
    return value == "true"


def _answer(erased: Erased) -> dict[str, Any]:
    counts = [
        ("count", erased.resources),
        ("resources", erased.resources),
        ("versions", erased.versions),
        ("index-rows", erased.index_rows),
        ("renamed", erased.renamed),
        ("export-jobs", erased.export_jobs),
    ]
    parameters: list[dict[str, Any]] = [{"name": name, "valueInteger": value} for name, value in counts]
    if erased.rows:
        parts = [{"name": what.replace(" ", "-"), "valueInteger": n} for what, n in sorted(erased.rows.items())]
        parameters.append({"name": "rows", "part": parts})
    parameters.append({"name": "pseudonym", "valueString": erased.pseudonym})
    return {"resourceType": "Parameters", "parameter": parameters}


def _out(name: str, doc: str) -> dict[str, Any]:
    return param(name, "out", "integer", min_=1, doc=doc)


OPERATION = own(
    definition(
        "expunge",
        title="Erase for good",
        description="Removes a resource with every version (its _history), index rows and conditional keys; on a "
        "Patient, the patient's whole record: the Patient and every resource whose patient reference names them, "
        "their write-back, message, form-link, app-session and subscription rows, and the Bulk Data export files "
        "that may hold them. AuditEvents that named what was erased keep a pseudonym (a keyed hash) instead, and "
        "one AuditEvent records the erasure. Refused (409) while write-back deliveries of the data are pending, "
        "unless force=true. Needs FHIR_SERVER_EXPUNGE_ENABLED and a Backend Services token with the scope "
        "fhir-server/expunge and a system/ scope that deletes the type.",
        resources=EXPUNGEABLE,
        instance=True,
        affects_state=True,
        parameters=[
            param("force", "in", "boolean", doc="true: erase even while write-back deliveries are pending"),
            _out("count", "resources removed (as HAPI FHIR's $expunge)"),
            _out("resources", "resources removed"),
            _out("versions", "versions removed"),
            _out("index-rows", "search index rows removed"),
            _out("renamed", "records that keep a pseudonym of what they named (AuditEvents, another's link)"),
            _out("export-jobs", "Bulk Data export jobs removed with their files"),
            {
                "name": "rows",
                "use": "out",
                "min": 0,
                "max": "1",
                "documentation": "rows of other tables removed, a part per kind (only those with some)",
                "part": [param(kind.replace(" ", "-"), "out", "integer") for kind in ROW_KINDS],
            },
            param("pseudonym", "out", "string", min_=1, doc="what the audit trail now calls the erased"),
        ],
    ),
    expunge,
)

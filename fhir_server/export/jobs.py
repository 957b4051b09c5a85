"""Export jobs as the rest of the server sees them: kick-off (with the per-client and server-wide caps), who may
poll, fetch and cancel a job, the completion manifest, cancelling and removal.

A job belongs to the token's client *and* its user or patient (``owner``): Bulk Data 2.0 lets a server limit
status and file requests to the client that asked, and a SMART app used by several patients is one client, so a
patient token of the same app must not reach another patient's files.  A job someone else asks about is
answered exactly like one that does not exist.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.caller import Caller
from fhir_server.auth.policy import Policy
from fhir_server.config import Settings
from fhir_server.errors import FhirError, not_found
from fhir_server.export.request import ExportRequest
from fhir_server.export.storage import ExportStorage, safe
from fhir_server.store import export_store
from fhir_server.store.engine import Database
from fhir_server.store.records import instant, utc_now
from fhir_server.store.repository import Repository

# The token claims a job keeps, to run as its client later (never the token itself).
KEPT_CLAIMS = ("iss", "sub", "client_id", "azp", "scope", "patient", "encounter", "fhirUser")
ERROR_FILE = "OperationOutcome.ndjson"


@dataclass(frozen=True)
class ExportJob:
    id: str
    owner: str
    client: str
    claims: dict[str, Any]
    request_url: str
    request: ExportRequest
    status: str
    transaction_time: datetime | None
    types_total: int
    types_done: int
    resources_written: int
    current_type: str | None
    output: list[dict[str, Any]]  # {"type", "name" (None: nothing of the type), "count"} per finished type
    error: str | None
    attempts: int
    lease_until: datetime | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in (export_store.QUEUED, export_store.RUNNING)

    @property
    def failed(self) -> bool:
        return self.status == export_store.FAILED

    @property
    def files(self) -> list[dict[str, Any]]:
        return [o for o in self.output if o.get("name")]

    def progress(self) -> str:
        """``X-Progress`` (under 100 characters, Bulk Data 2.0) and the administrator's list."""
        if self.status == export_store.QUEUED:
            return "queued"
        doing = f", writing {self.current_type}" if self.current_type and self.active else ""
        return f"{self.types_done} of {self.types_total} types, {self.resources_written} resources{doing}"[:99]

    def policy(self, rules: AccessPolicy) -> Policy:
        """The client's access policy, as at kick-off (the server's own when authorization was off)."""
        if not self.claims:
            return Policy.server()
        return Policy.for_caller(rules, Caller.from_claims(self.claims))


def job_from(row: dict[str, Any]) -> ExportJob:
    return ExportJob(
        id=row["id"],
        owner=row["owner"],
        client=row["client"],
        claims=orjson.loads(row["caller"]),
        request_url=row["request_url"],
        request=ExportRequest.from_json(row["parameters"]),
        status=row["status"],
        transaction_time=row["transaction_time"],
        types_total=row["types_total"],
        types_done=row["types_done"],
        resources_written=row["resources_written"],
        current_type=row["current_type"],
        output=orjson.loads(row["output"]),
        error=row["error"],
        attempts=row["attempts"],
        lease_until=row["lease_until"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
    )


def _digest(*parts: str | None) -> str:
    return hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()


def owner_of(caller: Caller) -> str:
    """Who may poll, fetch and cancel: the issuer, client, user and patient of the token ("" without auth)."""
    if not caller.authenticated:
        return ""
    return _digest(caller.issuer, caller.client_id, caller.subject, caller.patient)


def kick_off(
    repo: Repository, settings: Settings, caller: Caller, request: ExportRequest, request_url: str
) -> ExportJob:
    """Queue the job; 429 with Retry-After while the client has one that has not finished, or the server has
    ``export_max_active_jobs`` of them."""
    job_id = secrets.token_hex(16)  # in the status and file URLs: random, not derived from anything
    client_key = _digest(caller.issuer, caller.client_id) if caller.authenticated else ""
    retry = {"Retry-After": str(settings.export_retry_after_seconds)}

    def queue(session: Any) -> None:
        mine, everyone = export_store.active_counts(session, client_key)
        if mine:
            raise FhirError(429, "throttled", "$export: this client's previous export has not finished", headers=retry)
        if everyone >= settings.export_max_active_jobs:
            raise FhirError(429, "throttled", "$export: the server is running its maximum of exports", headers=retry)
        claims = {k: caller.claims[k] for k in KEPT_CLAIMS if k in caller.claims} if caller.authenticated else {}
        export_store.insert_job(
            session,
            {
                "id": job_id,
                "owner": owner_of(caller),
                "client_key": client_key,
                "client": (caller.client_id or "(authorization off)")[:255],
                "caller": orjson.dumps(claims).decode(),
                "request_url": request_url,
                "parameters": request.to_json(),
                "types_total": len(request.types),
            },
        )

    repo.write(queue)
    job = get(repo.engine, job_id)
    assert job is not None
    return job


def get(engine: Database, job_id: str) -> ExportJob | None:
    if not safe(job_id):
        return None
    row = export_store.get_job(engine, job_id)
    return job_from(row) if row else None


def for_caller(engine: Database, job_id: str, caller: Caller) -> ExportJob:
    """The caller's own job, or the 404 of a job that does not exist (also once it was cancelled or expired)."""
    job = get(engine, job_id)
    if job is None or job.owner != owner_of(caller):
        raise not_found("There is no such export (it may have expired or been cancelled)")
    return job


def listing(engine: Database) -> list[ExportJob]:
    return [job_from(row) for row in export_store.list_jobs(engine)]


def manifest(job: ExportJob, base: str) -> dict[str, Any]:
    """The completion manifest: files fetched with a token (of the same client, user and patient)."""
    link = f"{base}/_export/{job.id}"
    outcomes = [o for o in job.files if o["type"] == "OperationOutcome"]
    return {
        "transactionTime": instant(job.transaction_time) if job.transaction_time else None,
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": f"{link}/{o['name']}", "count": o["count"]}
            for o in job.files
            if o["type"] != "OperationOutcome"
        ],
        "error": [{"type": "OperationOutcome", "url": f"{link}/{o['name']}"} for o in outcomes],
    }


def file_of(job: ExportJob, name: str) -> dict[str, Any] | None:
    """The manifest's file of that name, once the job has completed."""
    if job.status != export_store.COMPLETED:
        return None
    return next((o for o in job.files if o["name"] == name), None)


def remove(engine: Database, storage: ExportStorage, job_id: str) -> bool:
    """Cancel a job or remove a finished one: the row first (its status and files answer 404 at once, and a
    worker running it stops at its next page), then its files.  False when there was no such job."""
    removed = export_store.delete_job(engine, job_id)
    storage.remove(job_id)
    return removed


def expiry(settings: Settings, now: datetime | None = None) -> datetime:
    return (now or utc_now()) + timedelta(seconds=settings.export_file_lifetime_seconds)

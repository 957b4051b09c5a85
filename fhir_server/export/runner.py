"""Running one claimed export job: each type in turn, in keyset pages, into one NDJSON file per type.

- No long read transaction: every page is its own short search (``export_page_size`` resources, in id order, the
  next page starting after the last id), and the job's lease and progress are recorded between pages.
- The stored JSON goes out as it is stored (one line, as served): nothing is parsed or serialised again, unless
  ``_elements`` asks for less of a type.
- ``transactionTime`` holds: a resource written after it goes out as the version current then (if that version
  is still the client's to see), and one created after it not at all.  (A resource deleted after it is not in the
  output: the search reads current resources.)
- Requests come first: while the process answers some, the runner pauses after each page so that it takes at
  most ``export_busy_share`` of a thread (activity.py); alone it runs flat out.
- A finished type is recorded with its file; a job resumed after a restart starts again at the first type not
  finished, rewriting that type's file from the start (storage.py), so nothing is written twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.activity import REQUESTS, yield_seconds
from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.audit import Access, AuditWriter
from fhir_server.auth.caller import Caller
from fhir_server.auth.policy import Policy
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.export.jobs import ERROR_FILE, ExportJob, expiry
from fhir_server.export.queries import ExportQueries, group_members
from fhir_server.export.storage import ExportStorage, FileWriter
from fhir_server.search.registry import Registry
from fhir_server.search.summary import shape_resource
from fhir_server.store import export_store
from fhir_server.store.records import Stored, utc_now
from fhir_server.store.repository import Repository

log = logging.getLogger("fhir_server.export")


class JobLost(Exception):
    """The job is no longer this worker's: cancelled (its row is gone) or resumed by another worker."""


class Interrupted(Exception):
    """The server is shutting down: the job is given back, to be resumed from its last finished type."""


class ExportRunner:
    def __init__(
        self,
        repo: Repository,
        registry: Registry,
        storage: ExportStorage,
        settings: Settings,
        audit: AuditWriter | None,
        stopping: Callable[[], bool],
    ) -> None:
        self.repo, self.registry, self.storage, self.settings = repo, registry, storage, settings
        self.rules = AccessPolicy(registry, patients_see_clinician_only=settings.client_sees_therapist_rating)
        self.audit = audit
        self.stopping = stopping
        self._job_id = ""
        self._lease: datetime | None = None
        self._renewed_at = 0.0

    def run(self, job: ExportJob) -> None:
        """Write every type not finished yet and complete the job.  Raises JobLost, Interrupted, a FhirError
        (the job cannot be done: it fails) or anything unexpected (the worker retries it)."""
        self._job_id, self._lease = job.id, job.lease_until
        assert job.transaction_time is not None
        policy = job.policy(self.rules)
        queries = self._queries(job, policy)
        output = list(job.output)
        written = sum(int(o["count"]) for o in output)
        started = time.monotonic()
        log.info(
            "export job %s",
            "resumed" if output or job.attempts > 1 else "started",
            extra={"export_job": job.id, "types": len(job.request.types), "done": len(output)},
        )
        finished = {o["type"] for o in output}
        for resource_type in job.request.types:
            if resource_type in finished:
                continue
            name, count = self._write_type(job, policy, queries, resource_type, written)
            output.append({"type": resource_type, "name": name, "count": count})
            written += count
            progress = {"types_done": len(output), "resources_written": written, "output": _json(output)}
            # A type with nothing in it is recorded with the next one (or within a second): a system export
            # reads over a hundred types, most of them empty, and each would otherwise be a write of its own.
            self._renew({**progress, "current_type": None}, force=name is not None)
        if job.request.notes and not any(o["type"] == "OperationOutcome" for o in output):
            output.append(self._error_file(job))
        now = utc_now()
        values = {
            "status": export_store.COMPLETED,
            "output": _json(output),
            "types_done": len(job.request.types),
            "resources_written": written,
            "current_type": None,
            "error": None,
            "finished_at": now,
            "expires_at": expiry(self.settings, now),
        }
        self._finish(values)
        seconds = round(time.monotonic() - started, 3)
        log.info("export job completed", extra={"export_job": job.id, "resources": written, "seconds": seconds})
        self._audit(job, f"$export job {job.id}: {written} resources of {len(job.request.types)} types")

    # -- one type -----------------------------------------------------------------------------------------------
    def _write_type(
        self, job: ExportJob, policy: Policy, queries: ExportQueries, resource_type: str, before: int
    ) -> tuple[str | None, int]:
        size = self.settings.export_page_size
        page_began, requests_before = time.monotonic(), REQUESTS.request_seconds
        page = self.repo.search(queries.query(resource_type, size))
        if not page.matches:
            return None, 0  # Bulk Data 2.0: no output item for a type with nothing in it
        self._renew({"current_type": resource_type, "resources_written": before})
        name, count = f"{resource_type}.ndjson", 0
        elements = queries.elements(resource_type)
        with self.storage.writer(job.id, name) as out:
            while True:
                count += self._write_page(out, self._as_at(job, policy, page.matches), elements)
                self._renew({"resources_written": before + count})
                if not page.next_cursor:
                    break
                self._pause(page_began, requests_before)
                page_began, requests_before = time.monotonic(), REQUESTS.request_seconds
                page = self.repo.search(queries.query(resource_type, size, page.next_cursor))
        log.info("export type written", extra={"export_job": job.id, "type": resource_type, "resources": count})
        return (name if count else None), count  # none left as of the transaction time: no output item

    @staticmethod
    def _write_page(out: FileWriter, contents: list[str], elements: list[str]) -> int:
        if elements:
            contents = [
                fhirjson.dumps(shape_resource(fhirjson.loads_stored(c), None, elements)).decode() for c in contents
            ]
        if contents:
            out.write("\n".join(contents).encode() + b"\n")
        return len(contents)

    def _as_at(self, job: ExportJob, policy: Policy, page: list[Stored]) -> list[str]:
        """The page's stored JSON as it was at the job's transaction time.  A resource written since goes out as
        the version current then, looked up for the whole page in one query (beside a busy server each page
        holds some); one that did not exist then, was deleted then, or whose version then the client may not
        see is left out."""
        at = job.transaction_time
        assert at is not None
        since = [s.id for s in page if s.last_updated > at]
        earlier = self.repo.versions_at(page[0].resource_type, since, at) if since else {}
        contents = []
        for stored in page:
            if stored.last_updated <= at:
                contents.append(stored.content or "")
                continue
            version = earlier.get(stored.id)
            if (
                version
                and not version.deleted
                and version.content
                and policy.sees(stored.resource_type, version.content, "r")
            ):
                contents.append(version.content)
        return contents

    # -- the job's parts ----------------------------------------------------------------------------------------
    def _queries(self, job: ExportJob, policy: Policy) -> ExportQueries:
        request = job.request
        members = None
        if request.level == "group":
            group = self.repo.read("Group", request.group_id or "")
            if group is None or group.deleted or not policy.sees("Group", group.content, "r"):
                raise FhirError(404, "not-found", f"Group/{request.group_id} is no longer available to this client")
            members = group_members(fhirjson.loads_stored(group.content or "{}"))
        targets = None
        if "Provenance" in request.types and (request.provenance_by_association or request.level != "system"):
            targets = export_store.provenance_target_types(self.repo.read_engine)
        return ExportQueries(request, policy, self.registry, members, targets)

    def _error_file(self, job: ExportJob) -> dict[str, Any]:
        """What lenient handling left out, one OperationOutcome per line (the manifest's ``error``)."""
        lines = [
            fhirjson.dumps(operation_outcome([Issue("not-supported", note, severity="warning")]))
            for note in job.request.notes
        ]
        with self.storage.writer(job.id, ERROR_FILE) as out:
            out.write(b"\n".join(lines) + b"\n")
        return {"type": "OperationOutcome", "name": ERROR_FILE, "count": len(lines)}

    def _renew(self, progress: dict[str, Any], *, force: bool = True) -> None:
        """Record progress and extend the lease (unless ``force`` is off and it was done less than a second
        ago); JobLost when the job is no longer ours; Interrupted on shutdown (checked here, between pages)."""
        if not force and time.monotonic() - self._renewed_at < 1.0:
            return
        lease = self._lease
        assert lease is not None
        self._renewed_at = time.monotonic()
        new_lease = utc_now() + timedelta(seconds=self.settings.export_lease_seconds)
        held = self.repo.write(lambda s: export_store.renew(s, self._job_id, lease, new_lease, progress))
        if not held:
            raise JobLost(self._job_id)
        self._lease = new_lease
        if self.stopping():
            raise Interrupted(self._job_id)

    def _finish(self, values: dict[str, Any]) -> None:
        lease = self._lease
        assert lease is not None
        if not self.repo.write(lambda s: export_store.finish(s, self._job_id, lease, values)):
            raise JobLost(self._job_id)

    @property
    def lease(self) -> datetime | None:
        """The lease the runner holds now (renewed after every page)."""
        return self._lease

    def _pause(self, page_began: float, request_seconds_before: float) -> None:
        """Between pages: the configured pause, and, as far as the process was answering requests meanwhile, as
        long as keeps the export to its ``export_busy_share`` of a thread (a Python thread working flat out makes
        every request thread of its process wait for the interpreter, and takes a CPU from the other processes).
        A client polling its status now and then barely slows it; a busy clinic gets three quarters back."""
        load = REQUESTS.load_since(request_seconds_before, page_began)
        page_seconds = time.monotonic() - page_began
        pause = self.settings.export_page_pause_seconds + yield_seconds(
            page_seconds, load, self.settings.export_busy_share
        )
        deadline = time.monotonic() + pause
        while pause > 0 and time.monotonic() < deadline and not self.stopping():
            time.sleep(min(0.05, deadline - time.monotonic()))

    def _audit(self, job: ExportJob, description: str) -> None:
        if self.audit is None or not job.claims:  # authorization off: nothing is audited
            return
        patients = [job.claims["patient"]] if isinstance(job.claims.get("patient"), str) else []
        access = Access("operation", description=description, patients=patients, query=job.request_url)
        self.audit.record(Caller.from_claims(job.claims), access)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()

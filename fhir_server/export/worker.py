"""The export worker: the server process's background thread (fhir_server/background.py, as the EHR outbox's)
that runs queued Bulk Data export jobs, one at a time, and removes what has expired.

A job is claimed under a lease (store/export_store.py) that the runner renews after every page, so processes
sharing a database never run one job twice, and a job whose process died is resumed by whichever process claims
it once the lease has run out: a restarted server resumes its own.  An attempt that fails unexpectedly (the
database went away) is retried after a pause; after ``export_max_attempts`` the job has failed, and says why in
its status answer.  Cancelled jobs are gone from the database already; their files, expired jobs and files a
removal left behind are removed here.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from fhir_server.auth.audit import AuditWriter
from fhir_server.background import BackgroundWorker
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.export import jobs
from fhir_server.export.runner import ExportRunner, Interrupted, JobLost
from fhir_server.export.storage import ExportStorage
from fhir_server.search.registry import Registry
from fhir_server.store import export_store
from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository

log = logging.getLogger("fhir_server.export")
RETRY_PAUSE_SECONDS = 5.0  # times the attempt number, before a failed attempt's job is resumed


class ExportWorker(BackgroundWorker):
    name = "export-worker"

    def __init__(
        self,
        repo: Repository,
        registry: Registry,
        storage: ExportStorage,
        settings: Settings,
        audit: AuditWriter | None = None,
    ) -> None:
        # stop() waits for the page in progress; the job is given back, to be resumed by the next start
        super().__init__(settings.export_poll_seconds, 30.0, log)
        self.repo, self.storage, self.settings = repo, storage, settings
        self.runner = ExportRunner(repo, registry, storage, settings, audit, lambda: self.stopping)
        self._swept = 0.0

    def run_once(self) -> bool:
        """Remove what has expired (every poll interval), then claim and run one due job; False when none."""
        if time.monotonic() - self._swept >= self.settings.export_poll_seconds:
            self.sweep()
            self._swept = time.monotonic()
        claimed = self.claim(
            self.repo, export_store.any_due, export_store.claim_due, self.settings.export_lease_seconds
        )
        if claimed is None:
            return False
        self.process(jobs.job_from(claimed))
        return True

    def process(self, job: jobs.ExportJob) -> None:
        if job.attempts > self.settings.export_max_attempts:
            self._fail(job, job.lease_until, f"stopped after {job.attempts - 1} attempts: {job.error or 'no answer'}")
            return
        try:
            self.runner.run(job)
        except JobLost:
            if jobs.get(self.repo.engine, job.id) is None:  # cancelled while running: its files go too
                self.storage.remove(job.id)
                log.info("export job cancelled while running", extra={"export_job": job.id})
        except Interrupted:
            self._release(job, 0.0, None)
            log.info("export job given back at shutdown", extra={"export_job": job.id})
        except FhirError as exc:  # the job cannot be done as asked (a Group removed since, a scope that is gone)
            self._fail(job, self.runner.lease, str(exc))
        except Exception as exc:  # the database or a bug: retried, so a job that always fails ends up failed
            reason = f"unexpected {type(exc).__name__}"
            if job.attempts >= self.settings.export_max_attempts:
                self._fail(job, self.runner.lease, reason)
            else:
                self._release(job, RETRY_PAUSE_SECONDS * job.attempts, reason)
                log.warning(
                    "export job attempt failed; will be resumed",
                    extra={"export_job": job.id, "attempt": job.attempts, "reason": reason},
                )

    def _release(self, job: jobs.ExportJob, pause: float, error: str | None) -> None:
        lease = self.runner.lease or job.lease_until
        assert lease is not None
        until = utc_now() + timedelta(seconds=pause)
        self.repo.write(lambda s: export_store.release(s, job.id, lease, until, error))

    def _fail(self, job: jobs.ExportJob, lease: datetime | None, reason: str) -> None:
        now = utc_now()
        values = {
            "status": export_store.FAILED,
            "error": reason[:500],
            "current_type": None,
            "finished_at": now,
            "expires_at": jobs.expiry(self.settings, now),
        }
        held = lease or job.lease_until
        assert held is not None
        self.repo.write(lambda s: export_store.finish(s, job.id, held, values))
        self.storage.remove(job.id)  # a failed job's manifest lists nothing: its partial files are of no use
        log.warning("export job failed", extra={"export_job": job.id, "reason": reason[:200]})

    def sweep(self) -> None:
        """Expired jobs (files first, then the row, so a crash in between only delays the removal), then files
        whose job is gone (a cancellation or removal that did not get to them)."""
        for job_id in export_store.expired_ids(self.repo.read_engine, utc_now()):
            self.storage.remove(job_id)
            export_store.delete_job(self.repo.engine, job_id)
            log.info("export job expired: files removed", extra={"export_job": job_id})
        on_disk = self.storage.jobs()  # listed before the rows are read: a job created meanwhile has its row
        if on_disk:
            for job_id in set(on_disk) - export_store.known_ids(self.repo.read_engine, on_disk):
                self.storage.remove(job_id)

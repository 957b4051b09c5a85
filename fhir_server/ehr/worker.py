"""The outbox worker: a background thread in the server process that delivers due rows to their EHRs.

One row at a time: claim it (a short write transaction that moves its ``next_attempt_at`` past a lease), deliver
it with no database transaction open, record the outcome.  PostgreSQL workers in several processes skip each
other's locked rows; on SQLite the claim runs under the single writer lock.  A worker that dies mid-delivery
leaves its row to become due again when the lease ends, which is also how a restarted server resumes.

Failures are retried after exponential backoff with full jitter (``random(0, min(max, base * 2^(n-1)))``), never
sooner than a ``Retry-After`` the EHR sent, which also holds back every other row for that EHR.  A row whose
attempts run out, or that the EHR refuses for good (a 4xx that will not change by itself), is parked as dead
for an administrator (``fhir-server outbox list --dead`` / ``retry``).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from fhir_server.auth.keys import KeyStore
from fhir_server.background import BackgroundWorker
from fhir_server.config import Settings
from fhir_server.ehr import registry
from fhir_server.ehr.client import DeliveryError, EhrHttp, RateLimits
from fhir_server.ehr.delivery import Delivery
from fhir_server.ehr.outbox import OutboxRow, row_from
from fhir_server.ehr.payload import PayloadError
from fhir_server.ehr.tokens import BackendServicesTokens, NoLaunchTokens, SmartDiscovery, TokenSource
from fhir_server.store import ehr_store
from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository, WriteSession

log = logging.getLogger("fhir_server.ehr.outbox")


def backoff(attempts: int, base: float, ceiling: float) -> float:
    """Full jitter: spreads the retries of many rows that failed together (an EHR outage) over the window."""
    return random.uniform(0.0, min(ceiling, base * 2 ** max(0, attempts - 1)))


class OutboxWorker(BackgroundWorker):
    name = "outbox-worker"

    def __init__(
        self, repo: Repository, keys: KeyStore, settings: Settings, launch_tokens: TokenSource | None = None
    ) -> None:
        # stop() waits for the attempt in progress, bounded by the request timeout
        super().__init__(settings.outbox_poll_seconds, settings.outbox_timeout_seconds * 3 + 5, log)
        self.repo = repo
        self.settings = settings
        self.limits = RateLimits(self._stop)
        self.http = EhrHttp(settings.outbox_timeout_seconds, self.limits)
        backend = BackendServicesTokens(keys, self.http, SmartDiscovery(self.http))
        self.delivery = Delivery(repo, self.http, launch_tokens or NoLaunchTokens(), backend)

    def stop(self) -> None:
        super().stop()
        self.http.close()

    # -- one row ------------------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim and process one due row; False when none was due."""
        claimed = self.claim(self.repo, ehr_store.any_due, ehr_store.claim_due, self.settings.outbox_lease_seconds)
        if claimed is None:
            return False
        self.process(row_from(claimed))
        return True

    def process(self, row: OutboxRow) -> None:
        lease = row.next_attempt_at
        ehr = registry.get(self.repo.engine, row.ehr_id)
        if ehr is None:
            self._failed(row, lease, DeliveryError("the EHR registration was removed", retryable=False))
            return
        waiting = self.limits.blocked_for(ehr.id)
        if waiting > 0 or self.stopping:  # the EHR asked us to wait, or we are shutting down
            later = utc_now() + timedelta(seconds=waiting)
            self.repo.write(lambda s: ehr_store.release(s, row.id, lease, later))
            return
        try:
            sent = self.delivery.deliver(ehr, row.response_id, row.token_ref)
        except PayloadError as exc:
            self._failed(row, lease, DeliveryError(str(exc), retryable=False))
        except DeliveryError as exc:
            self._failed(row, lease, exc)
        except Exception as exc:  # a bug or the database: counted, so a row that always fails ends up dead
            self._failed(row, lease, DeliveryError(f"unexpected {type(exc).__name__} while sending", retryable=True))
        else:
            self.repo.write(lambda s: ehr_store.mark_delivered(s, row.id, utc_now()))
            log.info(
                "outbox row delivered",
                extra={"outbox_row": row.id, "ehr": ehr.id, "resources": sent, "attempt": row.attempts + 1},
            )

    def _failed(self, row: OutboxRow, lease: datetime, error: DeliveryError) -> None:
        attempts = row.attempts + 1
        dead = not error.retryable or attempts >= self.settings.outbox_max_attempts
        delay = backoff(attempts, self.settings.outbox_base_delay_seconds, self.settings.outbox_max_delay_seconds)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        now = utc_now()
        next_at = now + timedelta(seconds=delay)
        until = now + timedelta(seconds=error.retry_after) if error.retry_after else None

        def record(session: WriteSession) -> None:
            ehr_store.mark_failed(session, row.id, lease, next_at, error.reason, dead=dead)
            if until is not None:
                ehr_store.defer_ehr(session, row.ehr_id, until)

        self.repo.write(record)
        log.warning(
            "outbox row %s: %s",
            "parked as dead" if dead else "will be retried",
            error.reason,
            extra={"outbox_row": row.id, "ehr": row.ehr_id, "attempt": attempts, "retry_in": round(delay, 3)},
        )

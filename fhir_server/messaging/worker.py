"""The message worker: a background thread in the server process that sends due rows of the message outbox.

One row at a time: claim it (a short write transaction moving its ``next_attempt_at`` past a lease; PostgreSQL
workers in other processes skip rows locked by a claim, and see the row as not due once it commits), word it with
its kind's renderer, hand it to its channel's transport with no transaction open, and record the outcome in a
transaction of its own right after the transport returns.

Delivery is at least once, and the window for "twice" is as narrow as it can be: a process that dies (or loses
the database) after the SMTP server or the gateway took a message and before ``sent`` is committed leaves the row
pending, and it is sent again when its lease ends.  No claim can be taken while another worker's lease holds, so
two live workers never send the same row; the lease (FHIR_SERVER_MESSAGE_LEASE_SECONDS) must outlast one send.

Failures: a transient one is retried after backoff doubling from FHIR_SERVER_MESSAGE_BASE_DELAY_SECONDS up to
..._MAX_DELAY_SECONDS; the row is dead after ..._MAX_ATTEMPTS attempts or once it is ..._MAX_AGE_SECONDS old; a
permanent one (the address refused) is dead at once.  Dead rows wait for ``fhir-server outbox retry``.  A channel
with no transport keeps its rows pending, with last_error saying so, and is warned about once per process.

Logs carry the row id, kind, channel and the error's class and code: never a recipient or a message's words.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from fhir_server.background import BackgroundWorker
from fhir_server.config import Settings
from fhir_server.messaging.channels import NOT_CONFIGURED, transports_from
from fhir_server.messaging.outbox import MessageRow, Outgoing, Renderer, check_kind, row_from
from fhir_server.messaging.transport import PermanentSendError, TransientSendError, Transport
from fhir_server.store import message_store
from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository

log = logging.getLogger("fhir_server.messaging")


def backoff(attempts: int, base: float, ceiling: float) -> float:
    """``min(ceiling, base * 2^(attempts-1))``, its upper half at random: doubling, yet spread out."""
    delay = min(ceiling, base * 2 ** max(0, attempts - 1))
    return random.uniform(delay / 2, delay)


class MessageWorker(BackgroundWorker):
    name = "message-worker"

    def __init__(self, repo: Repository, settings: Settings, transports: dict[str, Transport] | None = None) -> None:
        timeout = max(settings.smtp_timeout_seconds, settings.sms_timeout_seconds)
        super().__init__(settings.message_poll_seconds, timeout * 3 + 5, log)  # stop() waits for a send
        self.repo = repo
        self.settings = settings
        self.transports = transports_from(settings) if transports is None else transports
        self._warned: set[str] = set()  # channels with no transport, said once per process
        self.renderers: dict[str, Renderer] = {}

    def register_renderer(self, kind: str, renderer: Renderer) -> None:
        """How this worker words messages of ``kind`` (outbox.Renderer); registering a kind again replaces it."""
        check_kind(kind)
        self.renderers[kind] = renderer

    def stop(self) -> None:
        super().stop()
        for transport in self.transports.values():
            transport.close()

    def run_once(self) -> bool:
        claimed = self.claim(
            self.repo, message_store.any_due, message_store.claim_due, self.settings.message_lease_seconds
        )
        if claimed is None:
            due = message_store.next_due(self.repo.read_engine)
            if due is not None:
                self.come_back_in(max(0.0, (due - utc_now()).total_seconds()))
            return False
        self.process(row_from(claimed))
        return True

    def process(self, row: MessageRow) -> None:
        lease = row.next_attempt_at
        if self.stopping:  # given back untouched: the next process takes it
            self._hold(row, lease, utc_now(), row.last_error or "")
            return
        renderer = self.renderers.get(row.kind)
        if renderer is None:
            self._failed(row, lease, TransientSendError(f"no renderer is registered for the kind '{row.kind}'"))
            return
        try:
            outgoing = renderer(self.repo.engine, row)
        except Exception as exc:  # the renderer's way to say "not now" (or the database is away): retried
            self._failed(row, lease, TransientSendError(f"the renderer failed ({type(exc).__name__})"))
            return
        if outgoing is None:
            self.repo.write(lambda s: message_store.mark_skipped(s, row.id, lease, "nothing to send any more"))
            log.info("message skipped", extra=self._context(row))
            return
        transport = self.transports.get(row.channel)
        if transport is None:
            self._not_configured(row, lease)
            return
        self._send(row, lease, transport, outgoing)

    def _send(self, row: MessageRow, lease: datetime, transport: Transport, outgoing: Outgoing) -> None:
        try:
            transport.send(outgoing)
        except (TransientSendError, PermanentSendError) as exc:
            self._failed(row, lease, exc)
            return
        except Exception as exc:  # a bug in a transport: counted, so a row that always fails ends up dead
            self._failed(row, lease, TransientSendError(f"unexpected {type(exc).__name__} while sending"))
            return
        # Marked at once: between the transport's return and this commit lies the only chance of a resend.
        self.repo.write(lambda s: message_store.mark_sent(s, row.id, utc_now()))
        log.info("message sent", extra={**self._context(row), "attempt": row.attempts + 1})

    def _failed(self, row: MessageRow, lease: datetime, error: TransientSendError | PermanentSendError) -> None:
        attempts = row.attempts + 1
        now = utc_now()
        too_old = (now - row.created_at).total_seconds() >= self.settings.message_max_age_seconds
        dead = isinstance(error, PermanentSendError) or attempts >= self.settings.message_max_attempts or too_old
        delay = backoff(attempts, self.settings.message_base_delay_seconds, self.settings.message_max_delay_seconds)
        next_at = now + timedelta(seconds=delay)
        reason = f"{type(error).__name__}: {error}"
        self.repo.write(lambda s: message_store.mark_failed(s, row.id, lease, next_at, reason, dead=dead))
        log.warning(
            "message %s: %s",
            "parked as dead" if dead else "will be retried",
            type(error).__name__,
            extra={**self._context(row), "attempt": attempts, "error": str(error), "retry_in": round(delay, 3)},
        )

    def _not_configured(self, row: MessageRow, lease: datetime) -> None:
        recheck = utc_now() + timedelta(seconds=self.settings.message_unconfigured_recheck_seconds)
        self._hold(row, lease, recheck, NOT_CONFIGURED[row.channel])
        if row.channel not in self._warned:
            self._warned.add(row.channel)
            log.warning("messages wait: %s", NOT_CONFIGURED[row.channel], extra=self._context(row))

    def _hold(self, row: MessageRow, lease: datetime, until: datetime, reason: str) -> None:
        self.repo.write(lambda s: message_store.hold(s, row.id, lease, until, reason))

    @staticmethod
    def _context(row: MessageRow) -> dict[str, object]:
        return {"message_row": row.id, "kind": row.kind, "channel": row.channel}

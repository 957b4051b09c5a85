"""The notification worker: a background thread in the server process (background.py, as the EHR outbox's) that
works one Subscription at a time, under a lease:

- ``requested``: the handshake; answered 2xx, the Subscription is ``active``, else ``error`` with the reason;
- ``active`` with queued events: the oldest (up to its maxCount) in one notification, in event-number order, so
  a receiver that was down gets everything, in order, when it returns.  A failure is retried after exponential
  backoff with full jitter, never sooner than the endpoint's ``Retry-After``; nothing newer overtakes it.  After
  ``subscription_max_attempts`` failures in a row the Subscription goes to ``error`` with the reason, its events
  kept for ``fhir-server subscriptions retry``;
- ``active``, idle for its heartbeat period: a heartbeat.

Delivery is at least once: a notification whose answer was lost is sent again, with the same event numbers.
The Subscription resource's ``status`` and ``error`` follow the state, written by the server itself.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.auth.access import AccessPolicy
from fhir_server.background import BackgroundWorker
from fhir_server.config import Settings
from fhir_server.ehr.worker import backoff
from fhir_server.outbound import Outbound
from fhir_server.search.registry import Registry
from fhir_server.store import oauth_store
from fhir_server.store import subscription_store as store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository, WriteSession
from fhir_server.subscriptions.checks import endpoint_allowed
from fhir_server.subscriptions.delivery import Failure, load_events, send
from fhir_server.subscriptions.events import CACHE_SECONDS

log = logging.getLogger("fhir_server.subscriptions")


def fhir_base(settings: Settings) -> str:
    """References in notifications are absolute when the server knows its public address."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    return f"{settings.public_url.rstrip('/')}/fhir" if settings.public_url else ""


def set_resource_status(session: WriteSession, subscription_id: str, status: str, error: str | None) -> None:
    """The Subscription resource says what the server does with it (a new version, by the server)."""
    current = session.current("Subscription", subscription_id, lock=True)
    if current is None or current.deleted:
        return
    resource = fhirjson.loads_stored(current.content or "{}")
    if resource.get("status") == status and resource.get("error") == error:
        return
    resource["status"] = status
    if error:
        resource["error"] = error
    else:
        resource.pop("error", None)
    resource.pop("meta", None)
    session.update(resource, subscription_id)


class SubscriptionWorker(BackgroundWorker):
    name = "subscription-worker"

    def __init__(self, repo: Repository, registry: Registry, settings: Settings) -> None:
        super().__init__(settings.subscription_poll_seconds, 65, log)
        self.repo = repo
        self.settings = settings
        self.access = AccessPolicy(registry, patients_see_clinician_only=settings.client_sees_therapist_rating)
        self.http = Outbound()
        self.base = fhir_base(settings)

    def stop(self) -> None:
        super().stop()
        self.http.close()

    def run_once(self) -> bool:
        now = utc_now()
        for row in store.due(self.repo.read_engine, now):
            kind = self._work_for(row, now)
            if kind is None:
                continue
            lease = now + timedelta(seconds=self.settings.subscription_lease_seconds)
            claimed = self.repo.write(lambda s, sid=row["id"], until=lease: store.claim(s, sid, now, until))
            if claimed is None:  # another worker took it
                continue
            self.process(claimed, kind)
            return True
        return False

    def _work_for(self, row: dict[str, Any], now: datetime) -> str | None:
        if row["status"] == store.REQUESTED:
            # Not before every process's writes queue events for it (each reads which types have subscriptions
            # at most CACHE_SECONDS old, events.py): once active, no change committed anywhere is missed.
            wait = (row["created_at"] + timedelta(seconds=CACHE_SECONDS + 0.1) - now).total_seconds()
            if wait > 0:
                self.come_back_in(wait)
                return None
            return "handshake"
        if store.has_pending(self.repo.read_engine, row["id"]):
            return "event-notification"
        heartbeat, last = row["heartbeat_seconds"], row["last_sent_at"]
        if heartbeat and (last is None or last + timedelta(seconds=heartbeat) <= now):
            return "heartbeat"
        return None

    def process(self, row: dict[str, Any], kind: str) -> None:
        sid = row["id"]
        current = self.repo.read("Subscription", sid)
        if current is None or current.deleted:  # deleted since: nothing more is sent
            self.repo.write(lambda s: store.set_status(s, sid, store.OFF, "the Subscription was deleted"))
            return
        gone = creator_gone(self.repo.read_engine, row)
        if gone is not None:  # a subscription lives no longer than its creator's registration
            self._stopped(sid, gone)
            return
        if not endpoint_allowed(row["endpoint"], self.settings.subscription_endpoints):
            self._stopped(sid, "its endpoint is no longer among those the server's operator allows")
            return
        pending = store.pending_events(self.repo.read_engine, sid, row["max_count"]) if kind != "handshake" else []
        events = load_events(self.repo, self.access, row, pending)
        try:
            send(self.http, row, self.base, kind, events, store.ACTIVE if kind != "handshake" else store.REQUESTED)
        except Failure as exc:
            self._failed(row, kind, exc)
        except Exception as exc:  # a bug or the database: counted, so it cannot loop forever
            self._failed(row, kind, Failure(f"unexpected {type(exc).__name__} while sending"))
        else:
            ids = [int(e["id"]) for e in pending]

            def record(session: WriteSession) -> None:
                if store.delivered(session, sid, ids, utc_now(), store.ACTIVE):
                    set_resource_status(session, sid, store.ACTIVE, None)

            self.repo.write(record)
            log.info("subscription notified", extra={"subscription": sid, "kind": kind, "events": len(ids)})

    def _stopped(self, sid: str, reason: str) -> None:
        def record(session: WriteSession) -> None:
            store.set_status(session, sid, store.ERROR, reason)
            set_resource_status(session, sid, store.ERROR, reason)

        self.repo.write(record)
        log.warning("subscription in error: %s", reason, extra={"subscription": sid})

    def _failed(self, row: dict[str, Any], kind: str, failure: Failure) -> None:
        sid, failures = row["id"], row["failures"] + 1
        # A failed handshake is an error at once: the endpoint does not take this subscription yet.
        gives_up = kind == "handshake" or failures >= self.settings.subscription_max_attempts
        reason = f"{'handshake' if kind == 'handshake' else 'notification'} failed: {failure.reason}"
        delay = backoff(failures, self.settings.subscription_base_delay_seconds,
                        self.settings.subscription_max_delay_seconds)  # fmt: skip
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        retry_at = None if gives_up else utc_now() + timedelta(seconds=delay)
        status = store.ERROR if gives_up else row["status"]

        def record(session: WriteSession) -> None:
            if store.failed(session, sid, failures, retry_at, reason, status) and gives_up:
                set_resource_status(session, sid, store.ERROR, reason)

        self.repo.write(record)
        log.warning("subscription %s: %s", "in error" if gives_up else "will be retried", reason,
                    extra={"subscription": sid, "attempt": failures})  # fmt: skip


def creator_gone(engine: Database, row: dict[str, Any]) -> str | None:
    """Why the client or user that created the subscription may no longer receive anything through it: its
    client registration or user account removed (``fhir-server clients remove`` / ``users remove``).  A token of
    theirs still live would be refused within its lifetime; the subscription, which outlives tokens, stops now."""
    if not row["authenticated"]:
        return None
    claims = orjson.loads(row["caller"])
    client = claims.get("client_id") or claims.get("azp")
    if isinstance(client, str) and oauth_store.get_client(engine, client) is None:
        return f"its creator's client ({client}) is no longer registered here"
    user = claims.get("sub")
    if "fhirUser" in claims and isinstance(user, str) and oauth_store.get_user(engine, user) is None:
        return "its creator's user account was removed"
    return None

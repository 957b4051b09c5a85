"""What a write sets off for subscriptions, in the write's own transaction (engine/admission.py ``written``):

- a Subscription a client writes is registered for delivery (its settings, and its creator's claims, never a
  token), as ``requested``: the worker's handshake makes it ``active``;
- every written resource of a topic's type (the response itself, and the Observations and Flags its scoring wrote)
  that fires a topic, passes a live subscription's filters and is one its creator could read, is queued as that
  subscription's next numbered event.  Queued with the write or not at all: a crash between them loses nothing.

Which types have live subscriptions is read outside the transaction and kept a second (``LiveTypes``), so the hot
path (a scored submission with no subscriber) costs no query; a Subscription created in another process is seen
within that second, and the handshake that makes it active waits that second (worker.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fhir_server import fhirjson
from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.caller import Caller
from fhir_server.auth.policy import Policy
from fhir_server.search.query import parse_search
from fhir_server.search.registry import Registry
from fhir_server.store import subscription_store
from fhir_server.store.engine import Database
from fhir_server.store.records import Stored
from fhir_server.store.session import WriteSession
from fhir_server.subscriptions.checks import Settings
from fhir_server.subscriptions.topics import topic_types, topics

KEPT_CLAIMS = ("iss", "sub", "client_id", "azp", "scope", "patient", "encounter", "fhirUser")
CACHE_SECONDS = 1.0


class LiveTypes:
    """The types with a live subscription, per process, read at most once a second."""

    def __init__(self, engine: Database) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._at = -CACHE_SECONDS
        self._types: set[str] = set()

    def get(self) -> set[str]:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_SECONDS:
                self._types = subscription_store.live_types(self.engine)
                self._at = time.monotonic()
            return self._types

    def changed(self) -> None:
        with self._lock:
            self._at = -CACHE_SECONDS


def register(session: WriteSession, stored: Stored, settings: Settings, caller: Caller) -> None:
    """A Subscription a client wrote: its delivery settings, under its creator's access."""
    claims = {k: caller.claims[k] for k in KEPT_CLAIMS if k in caller.claims} if caller.authenticated else {}
    status = {"requested": subscription_store.REQUESTED, "off": subscription_store.OFF}.get(settings.status)
    values: dict[str, Any] = {
        "id": stored.id,
        "topic": settings.topic.url,
        "resource_type": settings.topic.resource,
        "filters": orjson.dumps(list(settings.filters)).decode(),
        "endpoint": settings.endpoint,
        "headers": orjson.dumps(list(settings.headers)).decode(),
        "content": settings.content,
        "heartbeat_seconds": settings.heartbeat_seconds,
        "timeout_seconds": settings.timeout_seconds,
        "max_count": settings.max_count,
        "authenticated": caller.authenticated,
        "caller": orjson.dumps(claims).decode(),
    }
    if status is not None:  # "active" / "error" echoed back by a client keep the server's state
        values.update(status=status, error=None, retry_at=None, failures=0)
    elif subscription_store.get_in(session, stored.id) is None:
        values.update(status=subscription_store.REQUESTED)
    subscription_store.register(session, values)


def policy_of(row: dict[str, Any], access: AccessPolicy) -> Policy:
    """The creator's access policy, rebuilt from the claims kept with the subscription."""
    if not row["authenticated"]:
        return Policy.server()
    return Policy.for_caller(access, Caller.from_claims(orjson.loads(row["caller"])))


class EventQueue:
    """Queues the events of the resources one write transaction stored."""

    def __init__(self, registry: Registry, live: LiveTypes, patients_see_clinician_only: bool = False) -> None:
        self.registry = registry
        self.access = AccessPolicy(registry, patients_see_clinician_only=patients_see_clinician_only)
        self.live = live
        # The notification worker's wake-up (app.py), run when a transaction that queued events has committed:
        # delivery starts then, not at the worker's next poll.
        self.wake: Callable[[], None] | None = None

    def woken_after(self, session: WriteSession) -> None:
        """Wake the notification worker once ``session`` commits (events queued, a Subscription to greet)."""
        if self.wake is not None:
            session.after_commit(self.wake)

    def on_written(self, session: WriteSession, written: Iterable[Stored]) -> int:
        """Queue an event per (live subscription, written resource) that fires its topic; returns how many."""
        relevant = [s for s in written if s.resource_type in topic_types() and not s.deleted]
        live = self.live.get() if relevant else set()
        relevant = [s for s in relevant if s.resource_type in live]
        queued = 0
        subscribers: dict[str, list[dict[str, Any]]] = {}
        for stored in relevant:
            if stored.resource_type not in subscribers:
                subscribers[stored.resource_type] = subscription_store.live_for_type(session, stored.resource_type)
            resource = fhirjson.loads_stored(stored.content or "{}")
            interaction = "create" if stored.version_id == 1 else "update"
            for row in subscribers[stored.resource_type]:
                if self._is_event(session, row, stored, resource, interaction):
                    subscription_store.add_event(session, row["id"], (stored.resource_type, stored.id,
                                                                      stored.version_id))  # fmt: skip
                    queued += 1
        if queued:
            self.woken_after(session)
        return queued

    def _is_event(
        self, session: WriteSession, row: dict[str, Any], stored: Stored, resource: dict[str, Any], interaction: str
    ) -> bool:
        topic = topics().get(row["topic"])
        if topic is None or not topic.fires(interaction, resource):
            return False
        # Never queued for a creator who could not read it: nothing about it reaches the subscriber, not even its id.
        if not policy_of(row, self.access).sees(stored.resource_type, resource, "r"):
            return False
        return all(self._matches(session, stored, query) for query in orjson.loads(row["filters"]))

    def _matches(self, session: WriteSession, stored: Stored, query: str) -> bool:
        """The filter as the search it is, narrowed to this resource, inside the transaction that wrote it."""
        params = [("_id", stored.id), *parse_qsl(query, keep_blank_values=True), ("_count", "1")]
        search = parse_search(stored.resource_type, params, self.registry)
        return bool(session.search(search).matches)

"""AuditEvents for access to patient data, shaped like IHE Basic Audit Log Patterns (BALP): who (user and client),
what (the resources and the patient), the action, the outcome and the source (HIPAA §164.312(b), docs/security.md).

Writes record their AuditEvent in the same database transaction as the data (``record_in``).  Reads, searches
and refusals are queued and stored in batches by a background thread (``AuditWriter``), as HAPI's BALP
interceptor does with its asynchronous sink, so that a read does not become a write transaction: the window in
which a crash can lose a read's record is one flush interval (``FLUSH_SECONDS``), and shutdown drains the queue.
Audit records never go to the application log.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir_server.auth.caller import Caller
from fhir_server.ids import new_id
from fhir_server.store.repository import Repository, WriteSession

log = logging.getLogger("fhir_server.audit")

FLUSH_SECONDS = 0.2
BATCH_SIZE = 200
QUEUE_LIMIT = 100_000

# restful-interaction code → DICOM action code (C R U D E)
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "search-type": "E",
    "search-system": "E",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "operation": "E",
    "login": "E",
}
OUTCOME_SUCCESS, OUTCOME_MINOR_FAILURE, OUTCOME_SERIOUS_FAILURE = "0", "4", "8"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_NAME = "fit-fhir-server"


@dataclass
class Access:
    """One interaction to record."""

    interaction: str  # a restful-interaction code, or "login" for a refused token
    outcome: str = OUTCOME_SUCCESS
    description: str | None = None
    resources: list[str] = field(default_factory=list)  # Type/id of what was read or written
    patients: list[str] = field(default_factory=list)  # patient ids the data belongs to
    query: str | None = None  # the search's query string (kept in the audit store only, never in logs)
    client_address: str | None = None


def build_event(caller: Caller | None, access: Access, now: datetime | None = None) -> dict[str, Any]:
    recorded = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": access.interaction}]
        if access.interaction != "login"
        else [{"system": _DCM, "code": "110122", "display": "Login"}],
        "action": ACTIONS.get(access.interaction, "E"),
        "recorded": recorded,
        "outcome": access.outcome,
        "agent": _agents(caller, access),
        "source": {
            "observer": {"display": SOURCE_NAME},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if access.description:
        event["outcomeDesc"] = access.description[:500]
    entities = [_entity(f"Patient/{p}", "1", "1", "Patient") for p in _unique(access.patients)]
    entities += [_entity(r, "2", "4", "Domain Resource") for r in _unique(access.resources)]
    if access.query is not None:
        entities.append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2"},
                "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(access.query.encode()).decode(),
            }
        )
    if entities:
        event["entity"] = entities
    return event


def _agents(caller: Caller | None, access: Access) -> list[dict[str, Any]]:
    network = {"network": {"address": access.client_address, "type": "2"}} if access.client_address else {}
    if caller is None or not caller.authenticated:
        return [{"requestor": True, "who": {"display": "unauthenticated"}, **network}]
    user: dict[str, Any] = {"requestor": True, **network}
    if caller.fhir_user:
        user["who"] = {"reference": caller.fhir_user}
    else:
        user["who"] = {"identifier": {"system": caller.issuer or "urn:unknown-issuer", "value": caller.subject or ""}}
    if caller.client_id:
        user["altId"] = caller.client_id
    agents = [user]
    if caller.client_id:
        agents.append(
            {
                "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
                "requestor": False,
                "who": {"identifier": {"system": caller.issuer or "urn:unknown-issuer", "value": caller.client_id}},
            }
        )
    return agents


def _entity(reference: str, type_code: str, role_code: str, role_display: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": {"system": _ENTITY_TYPE, "code": type_code},
        "role": {"system": _OBJECT_ROLE, "code": role_code, "display": role_display},
    }


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))[:50]


def record_in(session: WriteSession, caller: Caller, access: Access) -> None:
    """The AuditEvent of a write, in the write's own transaction."""
    session.create(build_event(caller, access), new_id())


class AuditWriter:
    """Stores queued AuditEvents in batches from a background thread.  ``backlog`` and the counters are what
    /metrics shows of it (the audit batch lag)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        # (monotonic time queued, event): the oldest one's age is the audit batch lag.  A deque, not a
        # queue.Queue: the writer wakes on its timer, never per record, and a deque's append and popleft are
        # atomic without a lock (a Queue's lock and condition were ~20 µs of every audited read under load).
        self._queue: deque[tuple[float, dict[str, Any]]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.stored = 0
        self.dropped = 0
        self.failed_flushes = 0
        self._in_flight: float | None = None  # when the oldest record of the batch being stored was queued
        self._in_flight_count = 0

    def record(self, caller: Caller | None, access: Access) -> None:
        self._put((time.monotonic(), build_event(caller, access)))
        self._start()

    def _put(self, item: tuple[float, dict[str, Any]]) -> None:
        if len(self._queue) >= QUEUE_LIMIT:  # the database has been unreachable for a long time; say so, no PHI
            self.dropped += 1
            log.error("audit queue full: an audit record was dropped")
            return
        self._queue.append(item)

    def backlog(self) -> tuple[int, float]:
        """(records not yet stored, seconds the oldest of them has waited; 0 when none).  A batch being stored
        counts: a database that hangs holds its records there."""
        depth = len(self._queue)
        try:
            oldest: float | None = self._queue[0][0] if depth else None
        except IndexError:  # the writer took the last one in between
            oldest = None
        in_flight = self._in_flight
        if in_flight is not None:
            depth += self._in_flight_count
            oldest = in_flight if oldest is None else min(oldest, in_flight)
        return depth, (time.monotonic() - oldest) if oldest is not None else 0.0

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(FLUSH_SECONDS)
            self.flush()

    def flush(self, wait: float = -1) -> int:
        """Store what is queued; on a database error keep it for the next attempt.  Returns how many.  One flush
        at a time: a caller's flush (shutdown, a test) waits for the writer's batch in flight, so every record
        queued before the call is stored when it returns; ``wait`` seconds at most (shutdown must end even when
        the writer is stuck on the database), or for as long as it takes (-1)."""
        if not self._flush_lock.acquire(timeout=wait):
            log.error("audit flush gave up after %.0f s: the writer's batch is stuck on the database", wait)
            return 0
        try:
            return self._flush()
        finally:
            self._flush_lock.release()

    def _flush(self) -> int:
        stored = 0
        while True:
            batch = []
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self._queue.popleft())
                except IndexError:
                    break
            if not batch:
                return stored
            self._in_flight_count, self._in_flight = len(batch), batch[0][0]
            try:
                self.repo.write(lambda session, b=batch: [session.create(e, new_id()) for _, e in b])
            except Exception:
                self._in_flight = None
                self.failed_flushes += 1
                log.warning("audit flush failed; %d records kept for retry", len(batch))
                self._queue.extendleft(reversed(batch))  # back at the front, in their order
                return stored
            self._in_flight = None
            stored += len(batch)
            self.stored += len(batch)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush(wait=5)

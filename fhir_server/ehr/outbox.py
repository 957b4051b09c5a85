"""The durable write-back outbox: what the form submission calls, and what the clinician screen and the
administrator read.

A row is inserted in the same database transaction as the QuestionnaireResponse and its scored results, so a
result is either stored *and* queued for the EHR, or neither.  The row names the response only: the payload is
built when it is sent, from the then-current local versions (an amended response or a Flag closed since is sent
as it is now, not as it was).  Delivery is the worker's job (``fhir_server.ehr.worker``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fhir_server.errors import FhirError
from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.store import ehr_store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now
from fhir_server.store.session import WriteSession
from fhir_server.validation import check_id

log = logging.getLogger("fhir_server.ehr.outbox")
DeliveryState = Literal["pending", "in the EHR", "failed"]
STATUSES = (ehr_store.PENDING, ehr_store.DELIVERED, ehr_store.DEAD)


class OutboxError(ValueError):
    """A row that cannot be queued or retried (unknown EHR, not a QuestionnaireResponse, unknown row)."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    ehr_id: int
    response_id: str
    token_ref: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @property
    def response_reference(self) -> str:
        return f"QuestionnaireResponse/{self.response_id}"


def row_from(values: dict[str, Any]) -> OutboxRow:
    return OutboxRow(**{k: values[k] for k in OutboxRow.__slots__})


def response_id_of(reference: str) -> str:
    """``QuestionnaireResponse/<id>`` → id; anything else is refused."""
    kind, _, rid = (reference or "").partition("/")
    if kind != "QuestionnaireResponse" or not rid or "/" in rid:
        raise OutboxError(f"write-back starts from a QuestionnaireResponse reference, not '{(reference or '')[:80]}'")
    try:
        check_id(rid)
    except FhirError:
        raise OutboxError(f"'{rid[:80]}' is not a valid resource id") from None
    return rid


def enqueue(session: WriteSession, ehr_id: int, response_reference: str, token_ref: str | None) -> int:
    """Queue the delivery of a response (and the results derived from it) to an EHR, inside the caller's
    ``repo.write`` transaction, after the response was written.  Queuing the same pending delivery twice (a
    replayed submission) returns the row already queued; should two concurrent replays both insert a row, the
    second delivery matches what the first stored (conditional writes), so nothing is duplicated in the EHR.
    Returns the row id."""
    response_id = response_id_of(response_reference)
    if not ehr_store.registration_exists(session, ehr_id):
        raise OutboxError(f"no EHR is registered with id {ehr_id}")
    current = session.current("QuestionnaireResponse", response_id)  # sees this transaction's own writes
    if current is None or current.deleted:
        raise OutboxError(f"{response_reference} is not stored; write it before queuing its delivery")
    if token_ref is not None and (not token_ref or len(token_ref) > 255):
        raise OutboxError("the token reference must be 1-255 characters")
    return ehr_store.enqueue(session, ehr_id, response_id, token_ref)


def queue_write_back(
    sessions: AppSessionStore, wake: Callable[[], None] | None = None
) -> Callable[[AppSession, WriteSession, dict[str, Any]], None]:
    """The form's ``after_submission`` hook: a response submitted in an EHR launch is queued for that EHR, in the
    transaction that stores it, with the launch session as the row's token reference; ``wake`` (the outbox
    worker's) runs once that transaction has committed, so the write-back starts then, not at the next poll."""

    def after_submission(session: AppSession, write: WriteSession, response: dict[str, Any]) -> None:
        if session.ehr_id is None:  # not launched from an EHR (a development session): nothing to write back
            return
        if not ehr_store.registration_exists(write, session.ehr_id):
            # Removed since the launch: keep the client's answers here rather than refuse them.
            log.warning("submission not queued: EHR registration %s no longer exists", session.ehr_id)
            return
        enqueue(write, session.ehr_id, f"QuestionnaireResponse/{response['id']}", sessions.token_ref(session))
        if wake is not None:
            write.after_commit(wake)

    return after_submission


def delivery_state(engine: Database, response_id: str) -> DeliveryState | None:
    """What the clinician screen shows: "in the EHR" only when every EHR it was queued for has it, "failed" when
    a delivery is dead (an administrator must act), else "pending".  None when it was never queued."""
    return _state(ehr_store.statuses_for_response(engine, response_id))


def delivery_states(engine: Database, response_ids: list[str]) -> dict[str, DeliveryState | None]:
    """``delivery_state`` for many responses, in one query."""
    found = ehr_store.statuses_for_responses(engine, response_ids)
    return {response_id: _state(found.get(response_id, [])) for response_id in response_ids}


def _state(statuses: list[str]) -> DeliveryState | None:
    if not statuses:
        return None
    if ehr_store.DEAD in statuses:
        return "failed"
    if ehr_store.PENDING in statuses:
        return "pending"
    return "in the EHR"


def rows(engine: Database, status: str | None = None) -> list[OutboxRow]:
    if status is not None and status not in STATUSES:
        raise OutboxError(f"status must be one of {', '.join(STATUSES)}")
    return [row_from(r) for r in ehr_store.list_rows(engine, status)]


def retry(engine: Database, row_id: int | None = None) -> int:
    """Dead rows back to pending with a fresh attempt budget (one row, or every dead row); returns how many."""
    if row_id is not None:
        row = ehr_store.get_row(engine, row_id)
        if row is None:
            raise OutboxError(f"there is no outbox row {row_id}")
        if row["status"] != ehr_store.DEAD:
            raise OutboxError(f"outbox row {row_id} is {row['status']}, not dead: nothing to retry")
    return ehr_store.retry_dead(engine, utc_now(), row_id)

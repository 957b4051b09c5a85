"""The message outbox as the rest of the server sees it: queue a message, say how a kind of message is worded,
list and retry rows.

A row names a kind (``form-link``, ``form-reminder``) and a subject (the ``form_links`` row): what the message says
and to whom is built by the kind's renderer when it is sent, from the then-current data, so nothing of it is kept
in the outbox and a reminder for a Task completed meanwhile is not sent (the renderer returns None).  Delivery is
the worker's job (``fhir_server.messaging.worker``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.store import message_store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now
from fhir_server.store.session import WriteSession

CHANNELS = ("email", "sms")
STATUSES = message_store.STATUSES


class MessageOutboxError(ValueError):
    """A row that cannot be queued or retried (unknown channel, unknown row, not dead); the text names the row."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message, as a renderer words it.  ``subject`` is the email's (SMS has none); ``html``, when given, is
    sent as the alternative to ``text`` (which is always sent); ``language`` is a BCP 47 tag (Content-Language)."""

    recipient: str  # an email address or a phone number (E.164)
    subject: str
    text: str
    html: str | None = None
    language: str = "en"

    def __repr__(self) -> str:  # a stray log of the object must not show the address or the words
        return f"Outgoing(language={self.language!r}, html={self.html is not None})"


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    kind: str
    subject_id: int
    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def row_from(values: dict[str, Any]) -> MessageRow:
    return MessageRow(**{k: values[k] for k in MessageRow.__slots__})


# How a kind of message is worded: the engine and the row → the message, or None when there is nothing to send any
# more (the row becomes ``skipped``); raising means a failure that may pass (the row is retried).  Registered on a
# worker (MessageWorker.register_renderer), not globally: two servers in one process (the tests) must each word
# their own rows from their own database.
Renderer = Callable[[Database, MessageRow], Outgoing | None]


def check_kind(kind: str) -> None:
    if not kind or len(kind) > 32:
        raise MessageOutboxError("a message kind is 1-32 characters")


def enqueue(
    session: WriteSession,
    kind: str,
    subject_id: int,
    channel: str,
    due_at: datetime | None = None,
    *,
    wake: Callable[[], None] | None = None,
) -> int:
    """Queue a message inside the caller's ``repo.write`` transaction, due at ``due_at`` (naive UTC; None: now).
    ``wake`` (``app.state.message_worker.wake``) runs once the transaction has committed, so a message due now
    goes at once rather than at the next poll.  Returns the row id."""
    if channel not in CHANNELS:
        raise MessageOutboxError(f"channel must be one of {', '.join(CHANNELS)}, not '{channel[:20]}'")
    check_kind(kind)
    if due_at is not None and due_at.tzinfo is not None:
        raise MessageOutboxError("due_at is naive UTC, as every time the store keeps")
    row_id = message_store.enqueue(session, kind, subject_id, channel, due_at)
    if wake is not None:
        session.after_commit(wake)
    return row_id


def rows(engine: Database, status: str | None = None) -> list[MessageRow]:
    if status is not None and status not in STATUSES:
        raise MessageOutboxError(f"status must be one of {', '.join(STATUSES)}")
    return [row_from(r) for r in message_store.list_rows(engine, status)]


def rows_for_subject(engine: Database, subject_id: int, kind: str | None = None) -> list[MessageRow]:
    return [row_from(r) for r in message_store.rows_for_subject(engine, subject_id, kind)]


def get(engine: Database, row_id: int) -> MessageRow | None:
    found = message_store.get_row(engine, row_id)
    return row_from(found) if found else None


def retry(engine: Database, row_id: int | None = None) -> int:
    """Dead rows back to pending, due now, with a fresh attempt budget and age (one row, or every dead row);
    returns how many."""
    if row_id is not None:
        row = message_store.get_row(engine, row_id)
        if row is None:
            raise MessageOutboxError(f"there is no message outbox row {row_id}")
        if row["status"] != message_store.DEAD:
            raise MessageOutboxError(f"message outbox row {row_id} is {row['status']}, not dead: nothing to retry")
    return message_store.retry_dead(engine, utc_now(), row_id)


def pending_stats(engine: Database) -> tuple[int, float | None]:
    """(messages pending, age in seconds of the oldest pending one or None): for metrics and health checks."""
    return message_store.pending_stats(engine, utc_now())

"""SQL for the message outbox (email, SMS to clients; fhir_server/messaging).  Only store/ talks SQL.

``enqueue`` runs in the caller's ``WriteSession`` (the message is queued with what makes it due, or not at all);
the worker's claim and its outcomes each run in their own short write transaction; listings and counts read with
the engine.  Rows come back as plain dicts.  Nothing here holds a recipient or a message's words: those are
built by the renderer when the row is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from fhir_server.store import claims
from fhir_server.store.client_request_tables import message_outbox

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
PENDING, SENT, SKIPPED, DEAD = "pending", "sent", "skipped", "dead"
STATUSES = (PENDING, SENT, SKIPPED, DEAD)
_ERROR_LENGTH = 500


def enqueue(session: WriteSession, kind: str, subject_id: int, channel: str, due_at: datetime | None) -> int:
    """A pending row, due at ``due_at`` (naive UTC; None: the transaction's time).  Returns its id."""
    now = session.now
    values = {
        "kind": kind,
        "subject_id": subject_id,
        "channel": channel,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": due_at or now,
        "created_at": now,
    }
    c = message_outbox.c
    return int(session.conn.execute(insert(message_outbox).values(**values).returning(c.id)).scalar_one())


def any_due(engine: Engine, now: datetime) -> bool:
    """A cheap read before claiming, so an idle worker never takes SQLite's write lock."""
    c = message_outbox.c
    with engine.connect() as conn:
        found = conn.execute(select(c.id).where(c.status == PENDING, c.next_attempt_at <= now).limit(1)).first()
    return found is not None


def next_due(engine: Engine) -> datetime | None:
    """When the earliest pending row becomes due (the worker sleeps until then when it is before its next poll)."""
    c = message_outbox.c
    with engine.connect() as conn:
        return conn.execute(select(func.min(c.next_attempt_at)).where(c.status == PENDING)).scalar()


def claim_due(session: WriteSession, now: datetime, lease_until: datetime) -> Row | None:
    """Take the oldest due row, held until ``lease_until`` (store/claims.py: never by two workers)."""
    return claims.claim_pending(session, message_outbox, now, lease_until)


def mark_sent(session: WriteSession, row_id: int, now: datetime) -> bool:
    """The transport took the message.  Not tied to the lease: it was sent, whoever holds the row now."""
    c = message_outbox.c
    done = session.conn.execute(
        update(message_outbox)
        .where(c.id == row_id, c.status == PENDING)
        .values(status=SENT, attempts=c.attempts + 1, sent_at=now, last_error=None)
    )
    return done.rowcount == 1


def mark_skipped(session: WriteSession, row_id: int, lease_until: datetime, reason: str) -> bool:
    """The renderer said there is nothing to send any more (the Task was completed, the link expired)."""
    c = message_outbox.c
    done = session.conn.execute(
        update(message_outbox)
        .where(c.id == row_id, c.status == PENDING, c.next_attempt_at == lease_until)
        .values(status=SKIPPED, last_error=reason[:_ERROR_LENGTH])
    )
    return done.rowcount == 1


def mark_failed(
    session: WriteSession, row_id: int, lease_until: datetime, next_attempt_at: datetime, error: str, *, dead: bool
) -> bool:
    """Record a failed attempt, only while our lease holds: a row re-claimed after a lapsed lease is the other
    worker's to record."""
    c = message_outbox.c
    done = session.conn.execute(
        update(message_outbox)
        .where(c.id == row_id, c.status == PENDING, c.next_attempt_at == lease_until)
        .values(
            status=DEAD if dead else PENDING,
            attempts=c.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_error=error[:_ERROR_LENGTH],
        )
    )
    return done.rowcount == 1


def hold(session: WriteSession, row_id: int, lease_until: datetime, next_attempt_at: datetime, reason: str) -> bool:
    """Give a claimed row back without counting an attempt, saying why (no transport for its channel, or the
    worker is stopping): it stays pending and is looked at again at ``next_attempt_at``."""
    c = message_outbox.c
    done = session.conn.execute(
        update(message_outbox)
        .where(c.id == row_id, c.status == PENDING, c.next_attempt_at == lease_until)
        .values(next_attempt_at=next_attempt_at, last_error=reason[:_ERROR_LENGTH])
    )
    return done.rowcount == 1


def list_rows(engine: Engine, status: str | None = None, limit: int = 1000) -> list[Row]:
    c = message_outbox.c
    query = select(message_outbox).order_by(c.id).limit(limit)
    if status is not None:
        query = query.where(c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def rows_for_subject(engine: Engine, subject_id: int, kind: str | None = None) -> list[Row]:
    """The rows of one subject (a form link's first message and reminders), oldest first."""
    c = message_outbox.c
    query = select(message_outbox).where(c.subject_id == subject_id).order_by(c.id)
    if kind is not None:
        query = query.where(c.kind == kind)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_row(engine: Engine, row_id: int) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(message_outbox).where(message_outbox.c.id == row_id)).mappings().first()
    return dict(row) if row else None


def retry_dead(engine: Engine, now: datetime, row_id: int | None = None) -> int:
    """Dead rows back to pending, due now, with a fresh attempt budget; their age counts from now too, as the
    worker measures the maximum age from ``created_at`` (an administrator's retry is a new start)."""
    c = message_outbox.c
    statement = update(message_outbox).where(c.status == DEAD)
    if row_id is not None:
        statement = statement.where(c.id == row_id)
    with engine.begin() as conn:
        return conn.execute(statement.values(status=PENDING, attempts=0, next_attempt_at=now, created_at=now)).rowcount


def pending_stats(engine: Engine, now: datetime) -> tuple[int, float | None]:
    """(rows pending, seconds since the oldest pending row was queued, or None when none is): for metrics."""
    c = message_outbox.c
    with engine.connect() as conn:
        count, oldest = conn.execute(select(func.count(), func.min(c.created_at)).where(c.status == PENDING)).one()
    return int(count), (now - oldest).total_seconds() if oldest is not None else None

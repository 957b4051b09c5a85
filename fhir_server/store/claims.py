"""Claiming the next unit of durable work (an EHR delivery, a message, an export job) so that several workers —
threads or server processes on one PostgreSQL — never take the same one: the oldest due row is selected ``FOR
UPDATE SKIP LOCKED`` (a row another worker is claiming is passed over, not waited for) and the caller moves it out
of the due set in the same transaction.  On SQLite the write transaction is exclusive already (FOR UPDATE renders
nothing there)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Table, select, update

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]


def lock_oldest(
    session: WriteSession, table: Table, due: tuple[ColumnElement[bool], ...], order: tuple[Any, ...]
) -> Row | None:
    """The first row of ``table`` matching every ``due`` condition in ``order``, locked for this transaction."""
    query = select(table).where(*due).order_by(*order).limit(1).with_for_update(skip_locked=True)
    row = session.conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def claim_pending(session: WriteSession, table: Table, now: datetime, lease_until: datetime) -> Row | None:
    """An outbox's claim (``status``, ``next_attempt_at``, ``id``): the oldest pending row due by ``now``, held
    until ``lease_until`` by moving its ``next_attempt_at`` there; a worker that dies with it only delays it."""
    c = table.c
    row = lock_oldest(session, table, (c.status == "pending", c.next_attempt_at <= now), (c.next_attempt_at, c.id))
    if row is None:
        return None
    session.conn.execute(update(table).where(c.id == row["id"]).values(next_attempt_at=lease_until))
    return {**row, "next_attempt_at": lease_until}

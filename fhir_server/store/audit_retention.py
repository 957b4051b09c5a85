"""SQL of the audit retention (auth/retention.py): the AuditEvents stored before a time, in batches, each marked
whether it records a read or a search (its ``subtype`` in the index); removal goes through store/expunge.py.

A batch is read outside any write transaction (an idle sweep takes no lock) and removed in one; batches walk
(lastUpdated, id) upwards from a cursor, so the AuditEvents that are kept (those of writes) are passed once per
sweep, not re-read by every batch.  Several server processes may sweep at once: a batch first locks the rows it
removes, passing over those another transaction holds (``claim``), so two sweeps split a batch between them
instead of waiting on each other, and a row another sweep removed first is simply not there any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.engine import Engine

from fhir_server.store.tables import idx_token, resources

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Cursor = tuple[datetime, str]  # (lastUpdated, id) of the last AuditEvent looked at
_r, _t = resources.c, idx_token.c


def older_batch(
    engine: Engine, before: datetime, after: Cursor | None, subtypes: tuple[str, Sequence[str]], limit: int
) -> list[tuple[str, datetime, bool]]:
    """(id, lastUpdated, whether it is a read) of the next ``limit`` AuditEvents stored before ``before``, after
    the cursor; ``subtypes``: the system and codes of the reads' ``subtype``."""
    system, codes = subtypes
    is_read = exists().where(
        _t.resource_type == "AuditEvent",
        _t.resource_id == _r.id,
        _t.param == "subtype",
        _t.system == system,
        _t.code.in_(list(codes)),
    )
    conditions = [_r.resource_type == "AuditEvent", _r.last_updated < before]
    if after is not None:
        at, last_id = after
        conditions.append(or_(_r.last_updated > at, and_(_r.last_updated == at, _r.id > last_id)))
    query = (
        select(_r.id, _r.last_updated, is_read.label("is_read"))
        .where(*conditions)
        .order_by(_r.last_updated, _r.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [(row.id, row.last_updated, bool(row.is_read)) for row in conn.execute(query)]


def count_older(engine: Engine, before: datetime) -> int:
    """AuditEvents stored before ``before`` (reads and writes): the sweep's total, for a progress bar."""
    query = select(func.count()).where(_r.resource_type == "AuditEvent", _r.last_updated < before)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def claim(session: WriteSession, event_ids: Sequence[str]) -> list[str]:
    """Of these AuditEvents, those still stored and held by no other transaction, locked until this one ends
    (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite's one writer needs no lock)."""
    query = (
        select(_r.id)
        .where(_r.resource_type == "AuditEvent", _r.id.in_(list(event_ids)))
        .with_for_update(skip_locked=True)
    )
    return [row[0] for row in session.conn.execute(query)]

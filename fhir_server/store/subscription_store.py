"""SQL for topic-based subscriptions and their event outbox (store/subscription_tables.py).

Functions that must commit with a resource write (registering a Subscription, queuing its events) take the caller's
``WriteSession``; the worker's short reads take the engine.  Rows come back as plain dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from fhir_server.store.subscription_tables import subscription_events, subscriptions

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
LIVE = (REQUESTED, ACTIVE)  # statuses the worker sends for
# Statuses that take events: one in error keeps them (in order) for when an administrator resumes it.
TAKES_EVENTS = (REQUESTED, ACTIVE, ERROR)
_S, _E = subscriptions.c, subscription_events.c


def register(session: WriteSession, values: Row) -> None:
    """Insert or replace a Subscription's settings; an existing one keeps its event counter (numbers never go
    back) and its outbox."""
    conn = session.conn
    found = conn.execute(select(_S.id).where(_S.id == values["id"])).first()
    if found is None:
        row = {**values, "events_since_start": 0, "failures": 0, "created_at": session.now}
        conn.execute(insert(subscriptions).values(**row))
    else:
        conn.execute(update(subscriptions).where(_S.id == values["id"]).values(**values))


def live_for_type(session: WriteSession, resource_type: str) -> list[Row]:
    """The subscriptions that take events about this type, seen from inside the write transaction; by id, so
    concurrent writers take the counters' row locks (``add_event``) in one order and cannot deadlock."""
    query = select(subscriptions).where(_S.resource_type == resource_type, _S.status.in_(TAKES_EVENTS)).order_by(_S.id)
    return [dict(r) for r in session.conn.execute(query).mappings().all()]


def add_event(session: WriteSession, subscription_id: str, focus: tuple[str, str, int]) -> int:
    """Queue one event with the subscription's next number.  The counter's UPDATE locks the row until commit, so
    numbers follow commit order on PostgreSQL; SQLite has one writer."""
    conn = session.conn
    number = conn.execute(
        update(subscriptions)
        .where(_S.id == subscription_id)
        .values(events_since_start=_S.events_since_start + 1)
        .returning(_S.events_since_start)
    ).scalar_one()
    values = {
        "subscription_id": subscription_id,
        "event_number": number,
        "focus_type": focus[0],
        "focus_id": focus[1],
        "focus_version": focus[2],
        "occurred_at": session.now,
    }
    conn.execute(insert(subscription_events).values(**values))
    return int(number)


def due(engine: Engine, now: datetime) -> list[Row]:
    """Subscriptions a worker may take now: live, not leased, not backing off."""
    query = select(subscriptions).where(
        _S.status.in_(LIVE),
        or_(_S.lease_until.is_(None), _S.lease_until <= now),
        or_(_S.retry_at.is_(None), _S.retry_at <= now),
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(_S.created_at)).mappings().all()]


def has_pending(engine: Engine, subscription_id: str) -> bool:
    with engine.connect() as conn:
        query = select(_E.id).where(_E.subscription_id == subscription_id, _E.sent_at.is_(None)).limit(1)
        return conn.execute(query).first() is not None


def claim(session: WriteSession, subscription_id: str, now: datetime, lease_until: datetime) -> Row | None:
    """Take a subscription under a lease; None when another worker holds it."""
    taken = session.conn.execute(
        update(subscriptions)
        .where(_S.id == subscription_id, _S.status.in_(LIVE), or_(_S.lease_until.is_(None), _S.lease_until <= now))
        .values(lease_until=lease_until)
    ).rowcount
    if taken != 1:
        return None
    return dict(session.conn.execute(select(subscriptions).where(_S.id == subscription_id)).mappings().one())


def pending_events(engine: Engine, subscription_id: str, limit: int) -> list[Row]:
    query = (
        select(subscription_events)
        .where(_E.subscription_id == subscription_id, _E.sent_at.is_(None))
        .order_by(_E.event_number)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def events(engine: Engine, subscription_id: str, since: int | None, until: int | None, limit: int) -> list[Row]:
    """Past events (sent or not) in number order, for ``$events``."""
    conditions = [_E.subscription_id == subscription_id]
    if since is not None:
        conditions.append(_E.event_number >= since)
    if until is not None:
        conditions.append(_E.event_number <= until)
    query = select(subscription_events).where(and_(*conditions)).order_by(_E.event_number).limit(limit)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def delivered(session: WriteSession, subscription_id: str, event_ids: list[int], now: datetime, status: str) -> bool:
    """A notification (or handshake, heartbeat) was accepted: its events are sent, the failures forgiven.  False
    when the subscription was switched off meanwhile (its status is then left as the client set it)."""
    if event_ids:
        session.conn.execute(update(subscription_events).where(_E.id.in_(event_ids)).values(sent_at=now))
    return (
        session.conn.execute(
            update(subscriptions)
            .where(_S.id == subscription_id, _S.status.in_(LIVE))
            .values(status=status, failures=0, error=None, retry_at=None, lease_until=None, last_sent_at=now)
        ).rowcount
        == 1
    )


def failed(
    session: WriteSession, subscription_id: str, failures: int, retry_at: datetime | None, error: str, status: str
) -> bool:
    """Record a failed notification; False when the subscription was switched off meanwhile."""
    return (
        session.conn.execute(
            update(subscriptions)
            .where(_S.id == subscription_id, _S.status.in_(LIVE))
            .values(status=status, failures=failures, error=error[:500], retry_at=retry_at, lease_until=None)
        ).rowcount
        == 1
    )


def release(session: WriteSession, subscription_id: str) -> None:
    session.conn.execute(update(subscriptions).where(_S.id == subscription_id).values(lease_until=None))


def set_status(session: WriteSession, subscription_id: str, status: str, error: str | None = None) -> None:
    session.conn.execute(
        update(subscriptions).where(_S.id == subscription_id).values(status=status, error=error, lease_until=None)
    )


def get(engine: Engine, subscription_id: str) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(subscriptions).where(_S.id == subscription_id)).mappings().first()
    return dict(row) if row else None


def list_all(engine: Engine, status: str | None = None) -> list[Row]:
    query = select(subscriptions).order_by(_S.created_at)
    if status is not None:
        query = query.where(_S.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def count_pending(engine: Engine, subscription_id: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(_E.subscription_id == subscription_id, _E.sent_at.is_(None))
        return int(conn.execute(query).scalar_one())


def retry(engine: Engine, subscription_id: str | None = None) -> int:
    """Subscriptions in error back to ``requested`` (a new handshake, then the events kept meanwhile, in order)."""
    statement = update(subscriptions).where(_S.status == ERROR)
    if subscription_id is not None:
        statement = statement.where(_S.id == subscription_id)
    with engine.begin() as conn:
        values = {"status": REQUESTED, "failures": 0, "error": None, "retry_at": None, "lease_until": None}
        return conn.execute(statement.values(**values)).rowcount


def live_types(engine: Engine) -> set[str]:
    """The resource types some subscription taking events is about (read outside any write transaction)."""
    with engine.connect() as conn:
        query = select(_S.resource_type).where(_S.status.in_(TAKES_EVENTS)).distinct()
        return {r[0] for r in conn.execute(query).all()}


def get_in(session: WriteSession, subscription_id: str) -> Row | None:
    """Inside the caller's write transaction."""
    row = session.conn.execute(select(subscriptions).where(_S.id == subscription_id)).mappings().first()
    return dict(row) if row else None

"""SQL for EHR registrations and the write-back outbox (only store/ talks SQL).

Registration functions take the engine and run in their own short transaction.  Outbox functions that must be
atomic with other writes take the caller's ``WriteSession`` and run on its connection here, so no connection
leaves store/.  Rows come back as plain dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from fhir_server.store import claims, secret_store
from fhir_server.store.tables import ehr_outbox, ehr_registrations

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
_SECRET = ehr_registrations.c.client_secret  # encrypted at rest


class AlreadyRegistered(Exception):
    """An EHR with this issuer is registered already."""


# -- registrations ----------------------------------------------------------------------------------------------
def add_registration(engine: Engine, values: Row) -> int:
    values = {**values, "client_secret": secret_store.seal(engine, _SECRET, values.get("client_secret"))}
    try:
        with engine.begin() as conn:
            result = conn.execute(insert(ehr_registrations).values(**values).returning(ehr_registrations.c.id))
            return int(result.scalar_one())
    except IntegrityError:
        raise AlreadyRegistered(f"an EHR with issuer {values['issuer']} is already registered") from None


def get_registration(engine: Engine, ehr_id: int) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(ehr_registrations).where(ehr_registrations.c.id == ehr_id)).mappings().first()
    return _opened(engine, row) if row else None


def registration_by_issuer(engine: Engine, issuer: str) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(ehr_registrations).where(ehr_registrations.c.issuer == issuer)).mappings().first()
    return _opened(engine, row) if row else None


def list_registrations(engine: Engine) -> list[Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(ehr_registrations).order_by(ehr_registrations.c.id)).mappings().all()
    return [_opened(engine, r) for r in rows]


def _opened(engine: Engine, row: Any) -> Row:
    """The row with its client secret decrypted (store/crypto.py)."""
    return {**row, "client_secret": secret_store.open_value(engine, _SECRET, row["client_secret"])}


def remove_registration(engine: Engine, ehr_id: int) -> bool:
    with engine.begin() as conn:
        return conn.execute(delete(ehr_registrations).where(ehr_registrations.c.id == ehr_id)).rowcount == 1


def registration_exists(session: WriteSession, ehr_id: int) -> bool:
    """Inside the caller's write transaction: the registration cannot go away before it commits."""
    found = session.conn.execute(select(ehr_registrations.c.id).where(ehr_registrations.c.id == ehr_id)).first()
    return found is not None


# -- the outbox -------------------------------------------------------------------------------------------------
def enqueue(session: WriteSession, ehr_id: int, response_id: str, token_ref: str | None) -> int:
    """A pending row, due at the transaction's time, unless one for the same EHR and response is pending already
    (a replayed submission).  In the caller's write transaction: queued with the response or not at all."""
    conn, now = session.conn, session.now
    c = ehr_outbox.c
    existing = conn.execute(
        select(c.id).where(c.ehr_id == ehr_id, c.response_id == response_id, c.status == PENDING)
    ).scalar()
    if existing is not None:
        return int(existing)
    values = {
        "ehr_id": ehr_id,
        "response_id": response_id,
        "token_ref": token_ref,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    return int(conn.execute(insert(ehr_outbox).values(**values).returning(c.id)).scalar_one())


def any_due(engine: Engine, now: datetime) -> bool:
    """A cheap read before claiming, so an idle worker never takes SQLite's write lock."""
    c = ehr_outbox.c
    with engine.connect() as conn:
        found = conn.execute(select(c.id).where(c.status == PENDING, c.next_attempt_at <= now).limit(1)).first()
    return found is not None


def claim_due(session: WriteSession, now: datetime, lease_until: datetime) -> Row | None:
    """Take the oldest due row, held until ``lease_until`` (store/claims.py: never by two workers)."""
    return claims.claim_pending(session, ehr_outbox, now, lease_until)


def mark_delivered(session: WriteSession, row_id: int, now: datetime) -> None:
    c = ehr_outbox.c
    session.conn.execute(
        update(ehr_outbox)
        .where(c.id == row_id, c.status == PENDING)
        .values(status=DELIVERED, attempts=c.attempts + 1, delivered_at=now, last_error=None)
    )


def mark_failed(
    session: WriteSession, row_id: int, lease_until: datetime, next_attempt_at: datetime, error: str, *, dead: bool
) -> None:
    """Record a failed attempt.  Only while our lease holds: a row re-claimed after a lapsed lease is the other
    worker's to record."""
    c = ehr_outbox.c
    session.conn.execute(
        update(ehr_outbox)
        .where(c.id == row_id, c.status == PENDING, c.next_attempt_at == lease_until)
        .values(
            status=DEAD if dead else PENDING,
            attempts=c.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_error=error[:500],
        )
    )


def release(session: WriteSession, row_id: int, lease_until: datetime, next_attempt_at: datetime) -> None:
    """Give a claimed row back without counting an attempt (shutdown, or its EHR asked us to wait)."""
    c = ehr_outbox.c
    session.conn.execute(
        update(ehr_outbox)
        .where(c.id == row_id, c.status == PENDING, c.next_attempt_at == lease_until)
        .values(next_attempt_at=next_attempt_at)
    )


def defer_ehr(session: WriteSession, ehr_id: int, until: datetime) -> int:
    """No pending row of this EHR is due before ``until`` (its Retry-After applies to every request we send)."""
    c = ehr_outbox.c
    return session.conn.execute(
        update(ehr_outbox)
        .where(c.ehr_id == ehr_id, c.status == PENDING, c.next_attempt_at < until)
        .values(next_attempt_at=until)
    ).rowcount


def list_rows(engine: Engine, status: str | None = None, limit: int = 1000) -> list[Row]:
    c = ehr_outbox.c
    query = select(ehr_outbox).order_by(c.id).limit(limit)
    if status is not None:
        query = query.where(c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_row(engine: Engine, row_id: int) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(ehr_outbox).where(ehr_outbox.c.id == row_id)).mappings().first()
    return dict(row) if row else None


def retry_dead(engine: Engine, now: datetime, row_id: int | None = None) -> int:
    """Dead rows back to pending with a fresh attempt budget: one row, or all of them."""
    c = ehr_outbox.c
    statement = update(ehr_outbox).where(c.status == DEAD)
    if row_id is not None:
        statement = statement.where(c.id == row_id)
    with engine.begin() as conn:
        return conn.execute(statement.values(status=PENDING, attempts=0, next_attempt_at=now)).rowcount


def count_pending(engine: Engine, ehr_id: int) -> int:
    c = ehr_outbox.c
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(c.ehr_id == ehr_id, c.status == PENDING)).scalar_one())


def statuses_for_responses(engine: Engine, response_ids: list[str]) -> dict[str, list[str]]:
    """Many responses' delivery statuses in one query (the clinician view lists a client's every session)."""
    c = ehr_outbox.c
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for start in range(0, len(response_ids), 500):
            chunk = response_ids[start : start + 500]
            for response_id, status in conn.execute(select(c.response_id, c.status).where(c.response_id.in_(chunk))):
                found.setdefault(response_id, []).append(status)
    return found


def statuses_for_response(engine: Engine, response_id: str) -> list[str]:
    c = ehr_outbox.c
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(c.status).where(c.response_id == response_id)).all()]


# -- for metrics (web/health_routes.py) ---------------------------------------------------------------------------
def pending_stats(engine: Engine, now: datetime) -> tuple[int, float | None]:
    """(rows pending, seconds since the oldest pending row was queued, or None when none is): for metrics."""
    c = ehr_outbox.c
    with engine.connect() as conn:
        count, oldest = conn.execute(select(func.count(), func.min(c.created_at)).where(c.status == PENDING)).one()
    return int(count), (now - oldest).total_seconds() if oldest is not None else None


def dead_by_registration(engine: Engine) -> dict[int, int]:
    """Dead rows per EHR registration id (the number only: an issuer URL is no metric label)."""
    c = ehr_outbox.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.ehr_id, func.count()).where(c.status == DEAD).group_by(c.ehr_id)).all()
    return {int(ehr_id): int(count) for ehr_id, count in rows}

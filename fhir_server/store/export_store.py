"""SQL for Bulk Data export jobs (only store/ talks SQL).

Reads take the engine; writes take the caller's ``WriteSession`` (``Repository.write``: on SQLite, the writers'
queue) and are each one short statement.  A worker holds a job by its lease: every write it makes names the lease
it holds, so a worker whose lease ran out (and whose job another worker resumed) changes nothing; a job removed
meanwhile (cancelled) is seen the same way.  Rows come back as plain dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from fhir_server.store import claims
from fhir_server.store.export_tables import ACTIVE, export_jobs
from fhir_server.store.tables import idx_reference

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
_c = export_jobs.c


def active_counts(session: WriteSession, client_key: str) -> tuple[int, int]:
    """(this client's active jobs, every client's), inside the kick-off's write transaction."""
    mine = func.coalesce(func.sum(case((_c.client_key == client_key, 1), else_=0)), 0)
    found = session.conn.execute(select(mine, func.count()).where(_c.status.in_(ACTIVE))).one()
    return int(found[0]), int(found[1])


def insert_job(session: WriteSession, values: Row) -> None:
    """A queued job; the unique index on an active client's key refuses a second one (IntegrityError)."""
    row = {
        "status": QUEUED,
        "types_done": 0,
        "resources_written": 0,
        "output": "[]",
        "attempts": 0,
        "created_at": session.now,
        **values,
    }
    session.conn.execute(insert(export_jobs).values(**row))


def get_job(engine: Engine, job_id: str) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(export_jobs).where(_c.id == job_id)).mappings().first()
    return dict(row) if row else None


def list_jobs(engine: Engine, limit: int = 1000) -> list[Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(export_jobs).order_by(_c.created_at, _c.id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def _due(now: datetime) -> Any:
    return _c.status.in_(ACTIVE), or_(_c.lease_until.is_(None), _c.lease_until <= now)


def any_due(engine: Engine, now: datetime) -> bool:
    """A cheap read before claiming, so an idle worker never takes SQLite's write lock."""
    with engine.connect() as conn:
        return conn.execute(select(_c.id).where(*_due(now)).limit(1)).first() is not None


def claim_due(session: WriteSession, now: datetime, lease_until: datetime) -> Row | None:
    """Take the oldest job that is queued, or running under a lease that ran out (its worker died), and hold it
    until ``lease_until``.  Its transaction time is fixed by the first claim, so a resumed job keeps it."""
    conn = session.conn
    row = claims.lock_oldest(session, export_jobs, _due(now), (_c.created_at, _c.id))
    if row is None:
        return None
    values = {
        "status": RUNNING,
        "lease_until": lease_until,
        "attempts": row["attempts"] + 1,
        "started_at": row["started_at"] or now,
        "transaction_time": row["transaction_time"] or now,
    }
    conn.execute(update(export_jobs).where(_c.id == row["id"]).values(**values))
    return {**dict(row), **values}


def _held(job_id: str, lease: datetime) -> Any:
    return (_c.id == job_id, _c.status == RUNNING, _c.lease_until == lease)


def renew(session: WriteSession, job_id: str, lease: datetime, new_lease: datetime, progress: Row) -> bool:
    """Record progress (``current_type``, ``resources_written``, ``types_done``, ``output``) and extend the
    lease; False when the job is no longer this worker's (cancelled, or resumed elsewhere)."""
    statement = update(export_jobs).where(*_held(job_id, lease)).values(lease_until=new_lease, **progress)
    return session.conn.execute(statement).rowcount == 1


def finish(session: WriteSession, job_id: str, lease: datetime, values: Row) -> bool:
    """Completed or failed (``status``, ``finished_at``, ``expires_at``, ``error``...), while the lease holds."""
    statement = update(export_jobs).where(*_held(job_id, lease)).values(lease_until=None, **values)
    return session.conn.execute(statement).rowcount == 1


def release(session: WriteSession, job_id: str, lease: datetime, until: datetime, error: str | None) -> bool:
    """Give a job back, to be resumed by any worker from ``until``: after an attempt failed (``error``), or on a
    shutdown (no error: the attempt is not counted)."""
    values: Row = {"lease_until": until}
    if error is None:
        values["attempts"] = _c.attempts - 1
    else:
        values["error"] = error[:500]
    statement = update(export_jobs).where(*_held(job_id, lease)).values(**values)
    return session.conn.execute(statement).rowcount == 1


def delete_job(engine: Engine, job_id: str) -> bool:
    """In its own transaction: a cancellation (HTTP or ``fhir-server export cancel``) or an expiry."""
    with engine.begin() as conn:
        return conn.execute(delete(export_jobs).where(_c.id == job_id)).rowcount == 1


def expired_ids(engine: Engine, now: datetime) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(_c.id).where(_c.expires_at <= now).limit(1000))]


def known_ids(engine: Engine, candidates: list[str]) -> set[str]:
    """Which of these job ids still have a row (the rest are files a removal left behind)."""
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(candidates), 500):
            chunk = candidates[start : start + 500]
            found |= {r[0] for r in conn.execute(select(_c.id).where(_c.id.in_(chunk)))}
    return found


def provenance_target_types(engine: Engine) -> set[str]:
    """The types some Provenance names as its ``target`` (an export chains Provenance only to those)."""
    r = idx_reference.c
    query = select(r.target_type).where(r.resource_type == "Provenance", r.param == "target").distinct()
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(query) if row[0]}

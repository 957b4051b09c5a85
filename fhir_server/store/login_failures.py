"""SQL for sign-in throttling (auth/throttle.py): one row per password attempt and key (only store/ talks SQL).

An attempt is recorded *before* the password is checked and counted after: whichever of several concurrent
attempts (in any worker process) commits last sees all of them, so no more than the limit can get through.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from fhir_server.store.tables import oauth_login_failures as failures


def record(engine: Engine, keys: Sequence[str], at: datetime) -> list[int]:
    """One row per key; returns their ids."""
    with engine.begin() as conn:
        return [
            int(conn.execute(insert(failures).values(key_hash=key, failed_at=at).returning(failures.c.id)).scalar_one())
            for key in keys
        ]


def count_since(engine: Engine, keys: Sequence[str], since: datetime) -> dict[str, int]:
    statement = (
        select(failures.c.key_hash, func.count())
        .where(failures.c.key_hash.in_(list(keys)), failures.c.failed_at > since)
        .group_by(failures.c.key_hash)
    )
    with engine.connect() as conn:
        found = {str(key): int(n) for key, n in conn.execute(statement)}
    return {key: found.get(key, 0) for key in keys}


def times_since(engine: Engine, key: str, since: datetime, excluding: Sequence[int]) -> list[datetime]:
    """When the key's attempts in the window happened, oldest first (``excluding`` the caller's own rows)."""
    statement = (
        select(failures.c.failed_at)
        .where(failures.c.key_hash == key, failures.c.failed_at > since, failures.c.id.not_in(list(excluding)))
        .order_by(failures.c.failed_at)
    )
    with engine.connect() as conn:
        return list(conn.execute(statement).scalars())


def forget(engine: Engine, *, ids: Sequence[int] = (), key: str | None = None) -> None:
    """Deletes the rows ``ids`` and, with ``key``, every row of that key (a successful sign-in's user)."""
    with engine.begin() as conn:
        if ids:
            conn.execute(delete(failures).where(failures.c.id.in_(list(ids))))
        if key is not None:
            conn.execute(delete(failures).where(failures.c.key_hash == key))


def prune(engine: Engine, before: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(delete(failures).where(failures.c.failed_at <= before))

"""The database as the health checks and metrics see it (web/health_routes.py): SQL stays in store/."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool


def ping(engine: Engine) -> None:
    """A trivial query; raises whatever the driver raises when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def pool_in_use(engine: Engine) -> int | None:
    """Connections checked out of the engine's pool now, or None for a pool that does not count them (SQLite's
    in-memory StaticPool, NullPool): only a QueuePool has a size that requests can exhaust."""
    pool = engine.pool
    return pool.checkedout() if isinstance(pool, QueuePool) else None

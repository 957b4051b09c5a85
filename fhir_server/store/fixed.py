"""Our prebuilt statements on PostgreSQL, compiled once and run straight on the driver.

The hot path's reads (the replay check, the scoring read) are fixed statements: going through SQLAlchemy's
execution and result machinery cost more Python than the database work (0.4 ms for a one-row look-up).  Plans
stay custom (the connection's setting, engine.py): generic plans for these were tried and rejected (cached while
the tables were small, they were 100 times slower once the tables grew).  Sending the statement in a pipeline
with psycopg's BEGIN was tried too: psycopg still waits for the BEGIN, so it saved no round trip.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

_DIALECT = pg_dialect.dialect()


class Fixed:
    """One statement compiled once for psycopg (named ``%(name)s`` parameters)."""

    def __init__(self, statement: Executable) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)  # values the statement binds itself (its literals)

    def fetch(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor:
            cursor.execute(self.sql, {**self.defaults, **params})
            return cursor.fetchall()

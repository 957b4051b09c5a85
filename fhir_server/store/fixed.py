"""Our prebuilt statements on PostgreSQL, compiled once and run straight on the driver.

The hot path's reads (the replay check, the scoring read) are fixed statements: going through SQLAlchemy's
execution and result machinery cost more Python than the database work (0.4 ms for a one-row look-up).  Plans
stay custom (the connection's setting, engine.py): generic plans for these were tried and rejected (cached while
the tables were small, they were 100 times slower once the tables grew).  Sending the statement in a pipeline
with psycopg's BEGIN was tried too: psycopg still waits for the BEGIN, so it saved no round trip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

_DIALECT = pg_dialect.dialect()
_SQLITE = pysqlite.dialect()


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


class FixedSqlite:
    """The same for SQLite's driver (positional ``?``): the statement runs under the single writer's lock, where
    SQLAlchemy's per-execution work (0.2-0.3 ms for each of the two hot reads) held everyone else up.  Values go
    in as SQLAlchemy's SQLite types would write them (datetimes as text); results come back as stored (text
    datetimes, 0/1 booleans) for the caller to read with ``stored_row``."""

    def __init__(self, statement: Executable) -> None:
        compiled = statement.compile(dialect=_SQLITE)
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql:
            raise ValueError("a fixed statement cannot have expanding parameters (their count varies)")
        self.order = tuple(compiled.positiontup or ())
        self.defaults = dict(compiled.params)

    def fetch(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        values = {**self.defaults, **params}
        positional = [sqlite_value(values[name]) for name in self.order]
        cursor = conn.connection.driver_connection.cursor()
        try:
            return cursor.execute(self.sql, positional).fetchall()
        finally:
            cursor.close()


def sqlite_value(value: Any) -> Any:
    # As SQLAlchemy's SQLite DateTime stores it, so text comparisons in SQL order the same way.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

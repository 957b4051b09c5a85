"""Our prebuilt statements on PostgreSQL, compiled once and run straight on the driver.

The hot path's reads (the replay check, the scoring read) are fixed statements: going through SQLAlchemy's
execution and result machinery cost more Python than the database work (0.4 ms for a one-row look-up).  They run
in a pipeline of their own, so when one opens the transaction, psycopg's BEGIN rides in the same round trip.
Plans stay custom (the connection's setting, engine.py): a generic plan cached while the tables were small was
tried and measured at 100 times slower once they grew.
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
            with driver.pipeline():
                cursor.execute(self.sql, {**self.defaults, **params})
            return cursor.fetchall()

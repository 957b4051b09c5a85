"""Our prebuilt statements on PostgreSQL, compiled once and run straight on the driver.

The hot path's reads (the replay check, the scoring read) are fixed statements: going through SQLAlchemy's
execution and result machinery cost more Python than the database work (0.4 ms for a one-row look-up).

Their plans are kept between executions (``Fixed(..., keep_plan=True)``): planning the scoring read cost
PostgreSQL more than running it (1.1 ms against 0.4 ms, and ~6 ms per submission under load).  A kept plan is
PostgreSQL's generic plan of a prepared statement, made without the parameter values, so it must not depend on
them: these statements find a client's rows through its own index entries (clinical.py) and check every other
condition on those few rows, and while such a plan is made, index scans and nested loops are all the planner may
use.  PostgreSQL makes the plan again whenever the statistics of its tables change (ANALYZE, which autovacuum
runs as a table grows by a tenth).  A plan made before there are statistics is a guess on "one row everywhere"
and can stay for a minute or more while the tables grow (seen: the replay check started from every
QuestionnaireResponse, 200 ms each; generic plans cached on small tables, 100 times slower once they grew), so
plans are kept only once ANALYZE has seen the tables with some rows (``_SETTLED_ROWS``); until then these
statements are planned for their values like every other statement (the connection's setting, engine.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

_DIALECT = pg_dialect.dialect()
_SQLITE = pysqlite.dialect()


# Around a statement whose plan is kept, in the same round trip (a pipeline): the planner settings for the plan
# PostgreSQL makes or re-makes at that execution, then the connection's own settings again.  SET LOCAL (the
# third argument) so that an error in between cannot leave them behind: the transaction ends either way.
_PLANNED = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}
KEEP_PLAN = "SELECT " + ", ".join(
    f"set_config('fhir.saved_{name}', current_setting('{name}'), true), set_config('{name}', '{value}', true)"
    for name, value in _PLANNED.items()
)
RESTORE_PLANNER = "SELECT " + ", ".join(
    f"set_config('{name}', current_setting('fhir.saved_{name}'), true)" for name in _PLANNED
)


# Kept plans wait until ANALYZE has counted at least this many rows in each table the statements read.
_SETTLED_ROWS = 500
_SETTLED_TABLES = ["resources", "idx_token", "idx_reference", "idx_date"]
_SETTLED_SQL = (
    "SELECT coalesce(min(c.reltuples), -1) FROM pg_class AS c "
    "WHERE c.oid IN (SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) AS name)"
)
# Asked again every few seconds until the statistics are there (once a minute in practice: autovacuum's own
# interval), and now and then afterwards.
_RECHECK_SECONDS = {False: 5.0, True: 300.0}
_settled: dict[str, tuple[bool, float]] = {}  # database URL -> (settled, when asked)


def _plans_settled(conn: Connection, driver: Any) -> bool:
    key = str(conn.engine.url)
    settled, asked = _settled.get(key, (False, -1e9))
    now = time.monotonic()
    if now - asked >= _RECHECK_SECONDS[settled]:
        with driver.cursor() as cursor:
            cursor.execute(_SETTLED_SQL, {"tables": _SETTLED_TABLES})
            settled = cursor.fetchone()[0] >= _SETTLED_ROWS
        _settled[key] = (settled, now)
    return settled


def psycopg_text(
    statement: Executable, *, inline: bool = False, values: Collection[str] = (), expand: bool = False
) -> tuple[str, dict[str, Any]]:
    """A statement's text for psycopg (named ``%(name)s`` parameters) and the values it binds itself.

    ``inline``: its text literals go into the text, so that a plan made once knows them ("resource_type =
    'Observation'") and only the caller's ``values`` (parameter names) stay parameters.  ``expand``: an IN list
    of a fixed length is rendered as that many parameters (SQLAlchemy leaves it to each execution otherwise)."""
    compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True} if expand else {})
    sql, defaults = str(compiled), dict(compiled.params)
    if inline:
        for name, value in list(defaults.items()):
            if isinstance(value, str) and name not in values:
                # quoted for SQL, and a % doubled: psycopg reads %(...)s and %% in the text (a LIKE pattern)
                sql = sql.replace(f"%({name})s", "'" + value.replace("'", "''").replace("%", "%%") + "'")
                del defaults[name]
    return sql, defaults


class Fixed:
    """One statement compiled once for psycopg.  With ``keep_plan`` it runs as a prepared statement on a generic
    plan (module docstring) when it runs inside a transaction; its text literals are then in its text."""

    def __init__(self, statement: Executable, keep_plan: bool = False) -> None:
        self.sql, self.defaults = psycopg_text(statement, inline=keep_plan)
        self.keep_plan = keep_plan

    def fetch(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return fetch_together(conn, [(self, params)])[0]


def fetch_together(conn: Connection, statements: list[tuple[Fixed, dict[str, Any]]]) -> list[list[tuple[Any, ...]]]:
    """Run fixed statements in one round trip (a pipeline); the rows of each, in order.  Their plans are kept
    when all of them ask for it, inside a transaction, once the statistics are there."""
    driver = conn.connection.driver_connection
    # Outside a transaction (an autocommit connection) SET LOCAL would do nothing: planned as usual there.
    kept = all(f.keep_plan for f, _ in statements) and not driver.autocommit and _plans_settled(conn, driver)
    if not kept and len(statements) == 1:  # no pipeline needed for a single statement
        [(fixed, params)] = statements
        with driver.cursor() as cursor:
            cursor.execute(fixed.sql, {**fixed.defaults, **params})
            return [cursor.fetchall()]
    cursors = [driver.cursor() for _ in statements]
    try:
        with driver.cursor() as settings, driver.pipeline():
            if kept:
                settings.execute(KEEP_PLAN)
            for cursor, (fixed, params) in zip(cursors, statements, strict=True):
                cursor.execute(fixed.sql, {**fixed.defaults, **params}, prepare=True if kept else None)
            if kept:
                settings.execute(RESTORE_PLANNER)
        return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


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

"""The writes of one transaction, queued and sent together when the transaction ends (or when a read could see
them): a scored submission writes ~120 rows to 6 tables, and sending them as they are made would cost a round
trip each.

PostgreSQL: everything (index rows to drop, version-checked updates of current rows, then one statement
inserting every table's rows, each table's by INSERT … SELECT FROM json_populate_recordset, with the
conditional-key claims) goes in one pipeline: one round trip, with fixed statement texts that stay prepared
whatever the row counts.  The rows of a table travel as one JSON array made by orjson in C: adapting them as
typed arrays cost psycopg ~1 ms of Python per submission (41 arrays), the JSON ~0.05 ms, and PostgreSQL parses
either in about the same time.

SQLite: executemany per statement on the driver cursor (no network; SQLAlchemy's per-row parameter processing
would cost more than the inserts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import DateTime, Table

from fhir_server.store.fixed import KEEP_PLAN, RESTORE_PLANNER
from fhir_server.store.tables import INDEX_TABLES, resource_versions, resources

# Current rows before versions before index rows, so a unique-key conflict surfaces on the first insert (SQLite, COPY).
INSERT_ORDER = (resources, resource_versions, *INDEX_TABLES.values())
BULK_ROWS = 1_000  # rows in one flush above which inserts go by COPY (a scored submission writes ~130)


class RetryTransaction(Exception):
    """Raised inside a write when a concurrent commit changed what it read; the whole write is retried."""


class NeedsWriter(Exception):
    """Raised when work run on a read snapshot (``Repository.write(optimistic=True)``) needs more than the reads a
    snapshot can answer: the work is run again the ordinary way, as the writer."""


@dataclass
class Claim:
    """A conditional-create key to insert; ``still_matches(holder)`` decides a conflict with another holder."""

    resource_type: str
    digest: str
    resource_id: str
    still_matches: Callable[[str], bool]


@dataclass
class Update:
    """A new current row for a resource read at version ``expected``: written only if that is still current."""

    resource_type: str
    id: str
    expected: int
    version_id: int
    last_updated: datetime
    content: str | None


@dataclass
class PendingWrites:
    rows: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    # Index rows of rewritten resources: (index kind, resource type) → ids, dropped before the inserts.
    stale: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    updates: list[Update] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    types: set[str] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.rows or self.stale or self.updates or self.claims)

    def touch(self, resource_type: str, resource_id: str) -> None:
        self.types.add(resource_type)
        self.keys.add((resource_type, resource_id))

    def queue(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Rows of resources the caller has ``touch``ed."""
        self.rows.setdefault(table, []).extend(rows)

    def restamp(self, old: tuple[datetime, str, dict[str, Any]], new: tuple[datetime, str, dict[str, Any]]) -> None:
        """Replace the placeholder time the writes were made with (datetime, its instant text, its date-index row)
        by the time the writer got the database: row times, the text in contents (meta.lastUpdated,
        Provenance.recorded) and the date-index rows made from it (no other index kind holds an instant)."""
        (old_time, old_text, old_range), (new_time, new_text, new_range) = old, new
        for table in (resources, resource_versions):
            for row in self.rows.get(table, ()):
                if row["last_updated"] == old_time:
                    row["last_updated"] = new_time
                if row["content"]:
                    row["content"] = row["content"].replace(old_text, new_text)
        for row in self.rows.get(INDEX_TABLES["date"], ()):
            if row["low"] == old_range["low"] and row["high"] == old_range["high"]:
                row.update(new_range)
        for update in self.updates:
            update.last_updated = new_time if update.last_updated == old_time else update.last_updated
            update.content = update.content.replace(old_text, new_text) if update.content else update.content

    def take(self) -> PendingWrites:
        """Hand the queued writes over (to be sent) and start empty."""
        taken = PendingWrites(self.rows, self.stale, self.updates, self.claims)
        self.rows, self.stale, self.updates, self.claims = {}, {}, [], []
        self.types, self.keys = set(), set()
        return taken

    # -- PostgreSQL ---------------------------------------------------------------------------------------
    def send_postgres(self, driver: Any, *, last: bool = False) -> list[Claim]:
        """One pipeline, one round trip.  Returns the claims another resource already holds.  ``last``: nothing
        but the commit follows, which ends the planner settings (SET LOCAL) by itself: no statement restores them
        unless claims are left to settle."""
        cursor, checked, inserted = driver.cursor(), driver.cursor(), driver.cursor()
        # A big batch (a transaction Bundle) goes by COPY after the pipeline: two round trips per table matter
        # less there than COPY's cheaper row handling in the server.
        bulk = sum(len(rows) for rows in self.rows.values()) > BULK_ROWS
        inserts = [(t, rows) for t in INSERT_ORDER if (rows := self.rows.get(t))] if not bulk else []
        claims = [
            {"resource_type": c.resource_type, "criteria_hash": c.digest, "resource_id": c.resource_id}
            for c in self.claims
        ]
        try:
            with driver.pipeline():
                # These writes' plans leave the planner nothing to choose (rows from one JSON parameter; deletes,
                # the version-checked update and the claims by their keys), so they are kept, not planned per
                # execution (store/fixed.py); no statistics needed.
                cursor.execute(KEEP_PLAN)
                for (kind, resource_type), ids in self.stale.items():
                    cursor.execute(_pg_delete(INDEX_TABLES[kind].name), (resource_type, ids), prepare=True)
                if self.updates:
                    checked.execute(PG_UPDATE, _columns_of(self.updates), prepare=True)
                if inserts or claims:
                    # Every table's rows and the claims in one statement: a statement costs psycopg and the server
                    # more than its rows do.  The column lists are our own keys, never client text.
                    tables = tuple((table, tuple(rows[0])) for table, rows in inserts)
                    values = [orjson.dumps(rows).decode() for _, rows in inserts]
                    claimed = [orjson.dumps(claims).decode()] if claims else []
                    inserted.execute(_pg_insert_all(tables, bool(claims)), [*values, *claimed], prepare=True)
                if not last:
                    cursor.execute(RESTORE_PLANNER)
            for table in INSERT_ORDER if bulk else ():
                rows = self.rows.get(table)
                if rows:
                    columns = tuple(rows[0])
                    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row([row[c] for c in columns])
            if self.updates and len(checked.fetchall()) != len(self.updates):
                raise RetryTransaction("a resource changed after this transaction read it")
            held = set(inserted.fetchall()) if claims else set()  # the claims this statement took
            lost = [c for c in self.claims if (c.resource_type, c.digest, c.resource_id) not in held]
            if last and lost:  # settling them runs statements of its own: planned as usual
                cursor.execute(RESTORE_PLANNER)
            return lost
        except driver.IntegrityError as exc:  # a concurrent writer took the same id or version first
            raise RetryTransaction(str(exc)) from exc
        finally:
            for c in (cursor, checked, inserted):
                c.close()

    # -- SQLite -------------------------------------------------------------------------------------------
    def send_sqlite(self, driver: Any) -> list[Claim]:
        cursor = driver.cursor()
        try:
            lost = []
            for claim in self.claims:
                cursor.execute(SQLITE_CLAIM, (claim.resource_type, claim.digest, claim.resource_id))
                if cursor.fetchone() is None:
                    lost.append(claim)
            for (kind, resource_type), ids in self.stale.items():
                delete = f"DELETE FROM {INDEX_TABLES[kind].name} WHERE resource_type = ? AND resource_id = ?"
                cursor.executemany(delete, [(resource_type, i) for i in ids])
            if self.updates:
                cursor.executemany(SQLITE_UPDATE, [_sqlite_update(u) for u in self.updates])
                if cursor.rowcount != len(self.updates):
                    raise RetryTransaction("a resource changed after this transaction read it")
            for table in INSERT_ORDER:
                rows = self.rows.get(table)
                if rows:
                    columns = tuple(rows[0])
                    statement, dates = _sqlite_insert(table, columns)
                    cursor.executemany(statement, [_sqlite_row(row, columns, dates) for row in rows])
            return lost
        except sqlite3.IntegrityError as exc:
            raise RetryTransaction(str(exc)) from exc
        finally:
            cursor.close()


_CLAIM_COLUMNS = "resource_type, criteria_hash, resource_id"
PG_CLAIMS = (
    f"INSERT INTO conditional_keys ({_CLAIM_COLUMNS}) SELECT {_CLAIM_COLUMNS} "
    f"FROM json_populate_recordset(NULL::conditional_keys, %s::json) "
    f"ON CONFLICT DO NOTHING RETURNING {_CLAIM_COLUMNS}"
)
SQLITE_CLAIM = (
    f"INSERT INTO conditional_keys ({_CLAIM_COLUMNS}) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING resource_id"
)

PG_UPDATE = (
    "UPDATE resources SET version_id = v.version_id, last_updated = v.last_updated, deleted = false, "
    "content = v.content FROM unnest(%b::varchar[], %b::varchar[], %b::int4[], %b::int4[], %b::timestamp[], "
    "%b::text[]) AS v(resource_type, id, expected, version_id, last_updated, content) "
    "WHERE resources.resource_type = v.resource_type AND resources.id = v.id AND resources.version_id = v.expected "
    "RETURNING resources.id"
)
SQLITE_UPDATE = (
    "UPDATE resources SET version_id = ?, last_updated = ?, deleted = 0, content = ? "
    "WHERE resource_type = ? AND id = ? AND version_id = ?"
)


def _columns_of(updates: list[Update]) -> list[list[Any]]:
    fields = ("resource_type", "id", "expected", "version_id", "last_updated", "content")
    return [[getattr(u, name) for u in updates] for name in fields]


@lru_cache(maxsize=16)
def _pg_delete(table: str) -> str:
    return f"DELETE FROM {table} WHERE resource_type = %s AND resource_id = ANY(%b)"


def _pg_insert(table: Table, columns: tuple[str, ...]) -> str:
    # The table's row type names and types the JSON keys; naive datetimes arrive as ISO text, which the timestamp
    # columns read as written (UTC).  Non-finite floats, which JSON cannot carry, are never indexed (number.py).
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table.name}, %s::json)"
    )


@lru_cache(maxsize=256)
def _pg_insert_all(tables: tuple[tuple[Table, tuple[str, ...]], ...], with_claims: bool) -> str:
    """One INSERT per table as one statement: data-modifying WITH queries (PostgreSQL runs each exactly once,
    whatever the outer statement reads) and the last one as the statement itself, or, ``with_claims``, the
    conditional-key claims as the statement, answering the claims it took (a claim another resource holds is
    left, ON CONFLICT DO NOTHING).  A unique-key conflict in any of the inserts fails the whole statement."""
    inserts = [_pg_insert(table, columns) for table, columns in tables]
    if with_claims:
        inserts.append(PG_CLAIMS)
    *first, last = inserts
    if not first:
        return last
    return "WITH " + ", ".join(f"w{n} AS ({insert})" for n, insert in enumerate(first)) + " " + last


@lru_cache(maxsize=64)
def _sqlite_insert(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    return statement, tuple(i for i, c in enumerate(columns) if isinstance(table.c[c].type, DateTime))


@lru_cache(maxsize=256)
def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy's SQLite DateTime writes it, so reads through SQLAlchemy parse it back.  Cached: the rows
    of one write share a few times (its own, the response's), and this runs in the single writer's turn."""
    # The year zero-padded: strftime writes year 1 (MIN_DATE, the sort key of a resource without a date) as "1-".
    return None if value is None else f"{value.year:04d}{value.strftime('-%m-%d %H:%M:%S.%f')}"


def _sqlite_row(row: dict[str, Any], columns: tuple[str, ...], dates: tuple[int, ...]) -> list[Any]:
    values = [row[c] for c in columns]
    for i in dates:
        values[i] = _sqlite_time(values[i])
    return values


def _sqlite_update(u: Update) -> tuple[Any, ...]:
    return (u.version_id, _sqlite_time(u.last_updated), u.content, u.resource_type, u.id, u.expected)

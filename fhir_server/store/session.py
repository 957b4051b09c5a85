"""One write transaction: versioned writes, batched inserts, conditional-key claims.  Used through
``Repository.write``; all SQL for writes lives here."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from fhir_server import fhirjson
from fhir_server.errors import precondition_failed
from fhir_server.search.query import SearchQuery
from fhir_server.store import clinical
from fhir_server.store.records import Stored, WriteResult, instant, utc_now
from fhir_server.store.search_sql import SearchOutcome, search_with_includes
from fhir_server.store.tables import INDEX_TABLES, conditional_keys, resource_versions, resources

CURRENT_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


# Current rows before versions before index rows, so unique-key conflicts surface on the first statement.
_INSERT_ORDER = (resources, resource_versions, *INDEX_TABLES.values())

READ_BY_ID = "SELECT version_id, last_updated, deleted, content FROM resources WHERE resource_type = {0} AND id = {0}"
READ_BY_ID_SQL = {"postgresql": READ_BY_ID.format("%s"), "sqlite": READ_BY_ID.format("?")}

# Built once: the hot read path then skips expression construction and hits the compiled-statement cache.
READ_VERSION = select(
    resource_versions.c.resource_type,
    resource_versions.c.id,
    resource_versions.c.version_id,
    resource_versions.c.last_updated,
    resource_versions.c.deleted,
    resource_versions.c.content,
    resource_versions.c.method,
).where(
    resource_versions.c.resource_type == bindparam("rtype"),
    resource_versions.c.id == bindparam("rid"),
    resource_versions.c.version_id == bindparam("vid"),
)


# Prebuilt: building a SELECT per call costs more than running it (the pipeline reads many resources per write).
_CURRENT = select(*CURRENT_COLUMNS).where(
    resources.c.resource_type == bindparam("rtype"), resources.c.id == bindparam("rid")
)
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class RetryTransaction(Exception):
    """Raised inside a write when a concurrent commit changed what it read; the whole write is retried."""


class Indexer(Protocol):
    def index_rows(self, resource_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]: ...

    def tables_for(self, resource_type: str) -> set[str]: ...


def stored_from_row(row: Any, method: str = "PUT") -> Stored:
    return Stored(row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content, method)


def _same_content(stored: str | None, resource: dict[str, Any]) -> bool:
    old = fhirjson.loads_stored(stored or "{}")
    old_meta = {k: v for k, v in (old.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    new = dict(resource)
    new_meta = {k: v for k, v in (new.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    return old == new and old_meta == new_meta


def with_meta(resource: dict[str, Any], resource_id: str, version_id: int, last_updated: datetime) -> str:
    """The served JSON: client content with id and meta.versionId/lastUpdated set by the server, keys in the
    conventional order (resourceType, id, meta first)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = instant(last_updated)
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return fhirjson.dumps(out).decode("utf-8")


class WriteSession:
    """Operations inside one write transaction.  Use through ``Repository.write``."""

    def __init__(self, conn: Connection, indexer: Indexer) -> None:
        self.conn = conn
        self.indexer = indexer
        self.now = utc_now()
        # Inserts are queued and sent as one multi-row INSERT (or COPY) per table at the end: a 100-entry
        # transaction or a scored submission is a handful of round trips, not dozens.  A read that could see a
        # queued row (same resource, or same type for searches) flushes first, so reads see earlier writes.
        self._pending: dict[Table, list[dict[str, Any]]] = {}
        self._pending_types: set[str] = set()
        self._pending_keys: set[tuple[str, str]] = set()
        # Index rows to drop (of resources rewritten here), one DELETE … IN per table at flush, before the inserts.
        self._stale: dict[tuple[str, str], list[str]] = {}

    def _flush_for(self, resource_type: str) -> None:
        if resource_type in self._pending_types:
            self.flush()

    def scored_history(
        self, subject: tuple[str, str], system: str, code: str, before: datetime, limit: int
    ) -> list[Stored]:
        self._flush_for("Observation")
        return clinical.scored_history(self.conn, subject, system, code, before, limit)

    def find_by_token(self, resource_type: str, param: str, system: str, code: str, *, limit: int) -> list[Stored]:
        self._flush_for(resource_type)
        return clinical.find_by_token(self.conn, resource_type, param, system, code, limit)

    def active_flags(self, subject: tuple[str, str], system: str, codes: list[str]) -> list[Stored]:
        self._flush_for("Flag")
        return clinical.active_flags(self.conn, subject, system, codes)

    def has_pending(self) -> bool:
        return bool(self._pending or self._stale)

    def flush(self) -> None:
        if not self._pending and not self._stale:
            return
        self._pending_types.clear()
        self._pending_keys.clear()
        for (kind, resource_type), ids in self._stale.items():
            table = INDEX_TABLES[kind]
            self.conn.execute(delete(table).where(table.c.resource_type == resource_type, table.c.resource_id.in_(ids)))
        self._stale.clear()
        if self.conn.dialect.name == "postgresql":
            self._copy_pending()
            return
        self._sqlite_pending()

    def _sqlite_pending(self) -> None:
        """SQLite: executemany straight on the driver cursor (SQLAlchemy's per-row parameter processing costs more
        than the inserts).  Values are written as SQLAlchemy's SQLite types write them: datetimes as text."""
        cursor = self.conn.connection.driver_connection.cursor()
        try:
            for table in _INSERT_ORDER:
                rows = self._pending.pop(table, None)
                if not rows:
                    continue
                columns = list(rows[0])  # our own keys, never client text
                statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                cursor.executemany(statement, [[_sqlite_value(row[c]) for c in columns] for row in rows])
        except sqlite3.IntegrityError as exc:
            self._pending.clear()
            raise RetryTransaction(str(exc)) from exc
        finally:
            cursor.close()

    def _copy_pending(self) -> None:
        """PostgreSQL: COPY is about twice as fast as multi-row INSERT for index rows (measured: bench/core.py)."""
        driver = self.conn.connection.driver_connection
        try:
            with driver.cursor() as cursor:
                for table in _INSERT_ORDER:
                    rows = self._pending.pop(table, None)
                    if not rows:
                        continue
                    columns = list(rows[0])  # our own keys, never client text
                    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row([row[c] for c in columns])
        except driver.IntegrityError as exc:  # a concurrent writer took the same id or version first
            self._pending.clear()
            raise RetryTransaction(str(exc)) from exc

    def _queue(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self._pending.setdefault(table, []).extend(rows)
        for row in rows:
            self._pending_types.add(row["resource_type"])
            self._pending_keys.add((row["resource_type"], row.get("id") or row["resource_id"]))

    # -- reads inside the transaction -------------------------------------------------------------------
    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Stored | None:
        if (resource_type, resource_id) in self._pending_keys:
            self.flush()
        query = _CURRENT_FOR_UPDATE if lock and self.conn.dialect.name == "postgresql" else _CURRENT
        row = self.conn.execute(query, {"rtype": resource_type, "rid": resource_id}).first()
        return stored_from_row(row) if row else None

    # -- writes -----------------------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], resource_id: str) -> WriteResult:
        """Insert version 1 of a new resource.  The primary key refuses a concurrent create of the same id."""
        return self._put_version(resource, resource_id, None, "POST")

    def rewrite(self, current: Stored, resource: dict[str, Any]) -> WriteResult:
        """A new version of a resource this transaction has just read with ``current(..., lock=True)``."""
        return self._put_version(resource, current.id, current, "PUT")

    def update(
        self,
        resource: dict[str, Any],
        resource_id: str,
        *,
        if_match: int | None = None,
        method: str = "PUT",
        skip_unchanged: bool = False,
    ) -> WriteResult:
        """Write a new version (creating the resource when the id is new, as FHIR update-as-create allows).
        With ``skip_unchanged`` an update whose content equals the current version's is a no-op (as HAPI does),
        so re-processing the same submission writes nothing new."""
        current = self.current(resource["resourceType"], resource_id, lock=True)
        unchanged = skip_unchanged and current is not None and not current.deleted and if_match is None
        if unchanged and _same_content(current.content, resource):  # type: ignore[union-attr]
            return WriteResult(current, created=False, existing=True)  # type: ignore[arg-type]
        if if_match is not None:
            if current is None or current.deleted:
                raise precondition_failed(f"If-Match version {if_match} given but the resource does not exist")
            if current.version_id != if_match:
                raise precondition_failed(
                    f"Version conflict: If-Match is {if_match} but the current version is {current.version_id}"
                )
        return self._put_version(resource, resource_id, current, method)

    def delete(self, resource_type: str, resource_id: str) -> Stored | None:
        """Soft delete: a new version marked deleted.  Returns None when there was nothing to delete."""
        current = self.current(resource_type, resource_id, lock=True)
        if current is None or current.deleted:
            return None
        version = current.version_id + 1
        self.conn.execute(
            update(resources)
            .where(resources.c.resource_type == resource_type, resources.c.id == resource_id)
            .values(version_id=version, last_updated=self.now, deleted=True, content=None)
        )
        self._insert_version(resource_type, resource_id, version, "DELETE", None)
        self._replace_index(resource_type, resource_id, None, had_rows=True)
        self.conn.execute(
            delete(conditional_keys).where(
                conditional_keys.c.resource_type == resource_type,
                conditional_keys.c.resource_id == resource_id,
            )
        )
        return Stored(resource_type, resource_id, version, self.now, True, None, "DELETE")

    def claim_conditional_key(
        self, resource_type: str, criteria: str, resource_id: str, still_matches: Callable[[str], bool]
    ) -> None:
        """Record that ``criteria`` now has a match (HAPI's fix for duplicate conditional creates).

        Called after this transaction's search found no match.  A committed claim by another resource that
        still matches means that resource committed after our search: retry, and the retry finds it.  A claim
        whose resource no longer matches is stale and is replaced; the DELETE names the resource id we checked,
        so a claim replaced concurrently is never removed by mistake.  Two uncommitted claims collide on the
        unique key and the loser retries.
        """
        digest = hashlib.sha256(criteria.encode()).hexdigest()
        key = conditional_keys.c
        holder = self.conn.execute(
            select(key.resource_id).where(key.resource_type == resource_type, key.criteria_hash == digest)
        ).scalar()
        if holder is not None and holder != resource_id:
            if still_matches(holder):
                raise RetryTransaction("conditional criteria were claimed by a concurrent write")
            self.conn.execute(
                delete(conditional_keys).where(
                    key.resource_type == resource_type, key.criteria_hash == digest, key.resource_id == holder
                )
            )
        elif holder == resource_id:
            return
        self.conn.execute(
            insert(conditional_keys).values(resource_type=resource_type, criteria_hash=digest, resource_id=resource_id)
        )

    def version(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        if (resource_type, resource_id) in self._pending_keys:
            self.flush()
        row = self.conn.execute(READ_VERSION, {"rtype": resource_type, "rid": resource_id, "vid": version_id}).first()
        return stored_from_row(row, row.method) if row else None

    def search(self, query: SearchQuery) -> SearchOutcome:
        if query.resource_type in self._pending_types or (self._pending and query.reaches_other_types()):
            self.flush()
        return search_with_includes(self.conn, query)

    # -- internals --------------------------------------------------------------------------------------
    def _put_version(
        self, resource: dict[str, Any], resource_id: str, current: Stored | None, method: str
    ) -> WriteResult:
        resource_type = resource["resourceType"]
        version = 1 if current is None else current.version_id + 1
        content = with_meta(resource, resource_id, version, self.now)
        if current is None:
            row = {"resource_type": resource_type, "id": resource_id, "version_id": version}
            self._queue(resources, [{**row, "last_updated": self.now, "deleted": False, "content": content}])
        else:
            self.conn.execute(
                update(resources)
                .where(
                    resources.c.resource_type == resource_type,
                    resources.c.id == resource_id,
                    resources.c.version_id == current.version_id,
                )
                .values(version_id=version, last_updated=self.now, deleted=False, content=content)
            )
        self._insert_version(resource_type, resource_id, version, method, content)
        self._replace_index(resource_type, resource_id, resource, had_rows=current is not None)
        stored = Stored(resource_type, resource_id, version, self.now, False, content, method)
        return WriteResult(stored, created=current is None or current.deleted)

    def _insert_version(self, rtype: str, rid: str, version: int, method: str, content: str | None) -> None:
        row = {"resource_type": rtype, "id": rid, "version_id": version, "last_updated": self.now}
        self._queue(resource_versions, [{**row, "method": method, "deleted": content is None, "content": content}])

    def _replace_index(
        self, resource_type: str, resource_id: str, resource: dict[str, Any] | None, *, had_rows: bool
    ) -> None:
        if had_rows:
            # Only the tables this type's parameters can fill (a Flag has no quantity rows), deferred to the flush.
            for kind in self.indexer.tables_for(resource_type):
                self._stale.setdefault((kind, resource_type), []).append(resource_id)
            self._pending_types.add(resource_type)
            self._pending_keys.add((resource_type, resource_id))
        if resource is None:
            return
        identity = {"resource_type": resource_type, "resource_id": resource_id}
        for kind, rows in self.indexer.index_rows(resource_type, resource).items():
            self._queue(INDEX_TABLES[kind], [{**identity, **row} for row in rows])

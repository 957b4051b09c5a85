"""Resource persistence: reads, versioned writes, conditional keys and history.  All SQL for them lives here.

Writes run inside ``Repository.write(fn)``: one database transaction, retried from the start when a concurrent
writer took the same version number or conditional key first (the database's unique keys decide who wins), so
concurrent updates without If-Match all land as consecutive versions and nothing is ever half-written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fhir_server import fhirjson
from fhir_server.errors import FhirError, precondition_failed
from fhir_server.search.query import SearchQuery
from fhir_server.store.records import Stored, WriteResult, instant, utc_now
from fhir_server.store.search_sql import SearchOutcome, search_with_includes
from fhir_server.store.tables import INDEX_TABLES, conditional_keys, resource_versions, resources

log = logging.getLogger("fhir_server.store")
T = TypeVar("T")

_CURRENT_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


# Current rows before versions before index rows, so unique-key conflicts surface on the first statement.
_INSERT_ORDER = (resources, resource_versions, *INDEX_TABLES.values())

_READ_BY_ID = "SELECT version_id, last_updated, deleted, content FROM resources WHERE resource_type = {0} AND id = {0}"
_READ_BY_ID_SQL = {"postgresql": _READ_BY_ID.format("%s"), "sqlite": _READ_BY_ID.format("?")}

# Built once: the hot read path then skips expression construction and hits the compiled-statement cache.
_READ_VERSION = select(
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


class RetryTransaction(Exception):
    """Raised inside a write when a concurrent commit changed what it read; the whole write is retried."""


class Indexer(Protocol):
    def index_rows(self, resource_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]: ...


def _stored(row: Any, method: str = "PUT") -> Stored:
    return Stored(row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content, method)


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
        # Inserts are queued and sent as one multi-row INSERT per table (a 100-entry transaction is a handful of
        # round trips, not hundreds).  Anything that reads flushes first, so reads always see earlier writes.
        self._pending: dict[Table, list[dict[str, Any]]] = {}

    def flush(self) -> None:
        if not self._pending:
            return
        if self.conn.dialect.name == "postgresql":
            self._copy_pending()
            return
        for table in _INSERT_ORDER:
            rows = self._pending.pop(table, None)
            if rows:
                self.conn.execute(insert(table), rows)

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

    # -- reads inside the transaction -------------------------------------------------------------------
    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Stored | None:
        self.flush()
        query = select(*_CURRENT_COLUMNS).where(
            resources.c.resource_type == resource_type, resources.c.id == resource_id
        )
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return _stored(row) if row else None

    # -- writes -----------------------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], resource_id: str) -> WriteResult:
        """Insert version 1 of a new resource.  The primary key refuses a concurrent create of the same id."""
        return self._put_version(resource, resource_id, None, "POST")

    def update(
        self, resource: dict[str, Any], resource_id: str, *, if_match: int | None = None, method: str = "PUT"
    ) -> WriteResult:
        """Write a new version (creating the resource when the id is new, as FHIR update-as-create allows)."""
        current = self.current(resource["resourceType"], resource_id, lock=True)
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
        self.flush()
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
        self.flush()
        row = self.conn.execute(_READ_VERSION, {"rtype": resource_type, "rid": resource_id, "vid": version_id}).first()
        return _stored(row, row.method) if row else None

    def search(self, query: SearchQuery) -> SearchOutcome:
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
            for table in INDEX_TABLES.values():
                self.conn.execute(
                    delete(table).where(table.c.resource_type == resource_type, table.c.resource_id == resource_id)
                )
        if resource is None:
            return
        identity = {"resource_type": resource_type, "resource_id": resource_id}
        for kind, rows in self.indexer.index_rows(resource_type, resource).items():
            self._queue(INDEX_TABLES[kind], [{**identity, **row} for row in rows])


class Repository:
    def __init__(
        self, engine: Engine, indexer: Indexer, *, write_retries: int = 8, read_engine: Engine | None = None
    ) -> None:
        self.engine = engine
        self.indexer = indexer
        self.write_retries = write_retries
        self.read_engine = read_engine or engine
        self._read_sql = _READ_BY_ID_SQL[engine.dialect.name]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def write(self, work: Callable[[WriteSession], T]) -> T:
        """Run ``work`` in one write transaction; retry it whole when a concurrent writer won a unique key."""
        for attempt in range(self.write_retries + 1):
            try:
                with self.engine.connect().execution_options(fhir_write=True) as conn, conn.begin():
                    session = WriteSession(conn, self.indexer)
                    result = work(session)
                    session.flush()
                    return result
            except (IntegrityError, RetryTransaction) as exc:
                if attempt == self.write_retries:
                    log.warning("write conflict persisted after %d retries", attempt)
                    raise FhirError(
                        409,
                        "conflict",
                        "A concurrent write kept conflicting with this one; retry the request",
                    ) from exc
        raise AssertionError("unreachable")

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        """The hot path (read by id): one prepared statement on a pooled DBAPI connection, no SQL construction."""
        conn = self.read_engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(self._read_sql, (resource_type, resource_id))
            row = cursor.fetchone()
            cursor.close()
        except self.read_engine.dialect.loaded_dbapi.OperationalError:
            # Outside SQLAlchemy's Connection there is no disconnect handling: after a database restart every
            # pooled connection is dead, so drop them all (this request still answers 503).
            conn.invalidate()
            self.read_engine.dispose()
            raise
        finally:
            conn.close()
        if row is None:
            return None
        version_id, last_updated, deleted, content = row
        if isinstance(last_updated, str):  # SQLite hands DateTime columns back as text
            last_updated = datetime.fromisoformat(last_updated)
        return Stored(resource_type, resource_id, version_id, last_updated, bool(deleted), content)

    def search(self, query: SearchQuery) -> SearchOutcome:
        with self.read_engine.connect() as conn:
            return search_with_includes(conn, query)

    def vread(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        with self.read_engine.connect() as conn:
            row = conn.execute(_READ_VERSION, {"rtype": resource_type, "rid": resource_id, "vid": version_id}).first()
        return _stored(row, row.method) if row else None

    def type_stamp(self, resource_type: str) -> tuple[int, Any]:
        """Changes to a type show here: (number of versions, newest write)."""
        v = resource_versions.c
        with self.read_engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(v.last_updated)).where(v.resource_type == resource_type)
            ).one()
        return row[0], row[1]

    def all_current(self, resource_type: str) -> list[Stored]:
        with self.read_engine.connect() as conn:
            rows = conn.execute(
                select(*_CURRENT_COLUMNS).where(
                    resources.c.resource_type == resource_type, resources.c.deleted.is_(False)
                )
            ).all()
        return [_stored(row) for row in rows]

    def read_many(self, keys: Iterable[tuple[str, str]]) -> list[Stored]:
        """Current, non-deleted versions of the given (type, id) pairs, in the order given."""
        keys = list(keys)
        if not keys:
            return []
        with self.read_engine.connect() as conn:
            found = {}
            for rtype in {t for t, _ in keys}:
                ids = [i for t, i in keys if t == rtype]
                for row in conn.execute(
                    select(*_CURRENT_COLUMNS).where(
                        resources.c.resource_type == rtype,
                        resources.c.id.in_(ids),
                        resources.c.deleted.is_(False),
                    )
                ):
                    found[(row.resource_type, row.id)] = _stored(row)
        return [found[k] for k in keys if k in found]

    def history(
        self,
        *,
        resource_type: str | None = None,
        resource_id: str | None = None,
        since: datetime | None = None,
        at: tuple[datetime, datetime] | None = None,
        before_history_id: int | None = None,
        count: int = 20,
    ) -> Sequence[tuple[int, Stored]]:
        """Versions newest first, as (history_id, version); keyset-paged on history_id."""
        v = resource_versions.c
        conditions = []
        if resource_type:
            conditions.append(v.resource_type == resource_type)
        if resource_id:
            conditions.append(v.id == resource_id)
        if since is not None:
            conditions.append(v.last_updated >= since)
        if at is not None:
            conditions.append(_current_during(at))
        if before_history_id is not None:
            conditions.append(v.history_id < before_history_id)
        query = (
            select(
                v.history_id,
                v.resource_type,
                v.id,
                v.version_id,
                v.last_updated,
                v.deleted,
                v.content,
                v.method,
            )
            .where(and_(True, *conditions))
            .order_by(v.history_id.desc())
            .limit(count)
        )
        with self.read_engine.connect() as conn:
            return [(row.history_id, _stored(row, row.method)) for row in conn.execute(query)]


def _current_during(period: tuple[datetime, datetime]) -> Any:
    """A version was current during [start, end] when it was written before the end and not superseded before
    the start (``_at``).  The successor is the same resource's next version."""
    start, end = period
    v = resource_versions.c
    successor = resource_versions.alias("successor")
    superseded_before_start = (
        select(successor.c.history_id)
        .where(
            successor.c.resource_type == v.resource_type,
            successor.c.id == v.id,
            successor.c.version_id == v.version_id + 1,
            successor.c.last_updated <= start,
        )
        .exists()
    )
    return and_(v.last_updated <= end, ~superseded_before_start, v.deleted.is_(False))

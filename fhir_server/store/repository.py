"""Resource persistence: reads and history here; writes in ``store.session`` (one transaction each).

Writes run inside ``Repository.write(fn)``: one database transaction, retried from the start when a concurrent
writer took the same version number or conditional key first (the database's unique keys decide who wins), so
concurrent updates without If-Match all land as consecutive versions and nothing is ever half-written.

A caller's reads (a view made by ``for_reader``) may go to a streaming replica (store/replica.py); every other read
is the primary's.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fhir_server.errors import FhirError
from fhir_server.search.query import SearchQuery
from fhir_server.store.records import Stored
from fhir_server.store.replica import Replica, counted
from fhir_server.store.search_sql import SearchOutcome, search_with_includes
from fhir_server.store.session import (
    CURRENT_COLUMNS,
    READ_BY_ID_SQL,
    READ_VERSION,
    Indexer,
    NeedsWriter,
    RetryTransaction,
    WriteSession,
    stored_from_row,
    with_meta,
)
from fhir_server.store.sqlite_writer import SqliteWriter
from fhir_server.store.tables import resource_versions, resources
from fhir_server.store.write_group import WriteGroup

__all__ = ["Indexer", "Repository", "RetryTransaction", "WriteSession", "with_meta"]
log = logging.getLogger("fhir_server.store")
T = TypeVar("T")


class Repository:
    def __init__(
        self,
        engine: Engine,
        indexer: Indexer,
        *,
        write_retries: int = 8,
        read_engine: Engine | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.engine = engine
        self.indexer = indexer
        self.write_retries = write_retries
        self.read_engine = read_engine or engine  # the primary's: workers, claims and access checks read here
        self.replica = replica
        self._reader: str | None = None  # set on a caller's view (for_reader)
        self._read_sql = READ_BY_ID_SQL[engine.dialect.name]
        self._prepare_reads = engine.dialect.name == "postgresql"
        self._sqlite = SqliteWriter(engine.url.database) if engine.dialect.name == "sqlite" else None
        self._writer_lock: Any = self._sqlite or contextlib.nullcontext()
        self._group = WriteGroup(self._begin, self._sqlite.after_write if self._sqlite else lambda: None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def for_reader(self, reader: str) -> Repository:
        """This repository as one caller uses it: its searches, history, reads and version reads may go to the
        replica, and its writes are remembered so that its own reads see them (store/replica.py).  ``reader``
        names the caller (deps.py).  Without a replica, the repository itself."""
        if self.replica is None:
            return self
        view = copy.copy(self)
        view._reader = reader
        return view

    def _routed(self, run: Callable[[Engine], T]) -> T:
        """A read on the replica when it serves this caller now, else (or when it fails there) on the primary."""
        replica, reader = self.replica, self._reader
        if replica is None or reader is None:
            return run(self.read_engine)
        if replica.serves(reader):
            try:
                result = run(replica.engine)
            except Exception as exc:
                if not replica.fell_over(exc):
                    raise
            else:
                counted("replica")
                return result
        counted("primary")
        return run(self.read_engine)

    def write(self, work: Callable[[WriteSession], T], *, optimistic: bool = False) -> T:
        """Run ``work`` in one write transaction; retry it whole when a concurrent writer won a unique key.

        The connection is opened (and the transaction begun) at ``work``'s first database access, so what comes
        before it (validating the resource) holds no connection and, on SQLite, no place in the writers' queue.
        ``optimistic`` (SQLite): see ``_write_before_the_turn``.
        """
        if optimistic and self._sqlite is not None:
            written = self._write_before_the_turn(work)
            if written is not None:
                return written[0]
        for attempt in range(self.write_retries + 1):
            try:
                with contextlib.ExitStack() as stack:
                    session = WriteSession(lambda stack=stack: self._begin(stack), self.indexer)
                    if self.replica is not None and self._reader is not None:  # the caller reads its write
                        session.committed.append(lambda r=self.replica, who=self._reader: r.remember(who))
                    result = work(session)
                    session.flush(last=True)  # the commit follows (leaving the ExitStack)
                if self._sqlite is not None:
                    self._sqlite.after_write()  # committed, out of the writers' queue
                _committed(session)
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

    def _write_before_the_turn(self, work: Callable[[WriteSession], T]) -> tuple[T] | None:
        """SQLite has one writer at a time, so what a writer does while it holds the database is what limits
        throughput: a scored submission computed its Observations, Flags and index rows there (~4 ms of CPU
        against ~1.5 ms of SQLite work).  Here ``work`` runs first outside the writers' queue: it may make the
        reads the scoring pipeline and the replay check make (each its own read, as READ COMMITTED reads are on
        PostgreSQL) and queue writes; the writer's turn then only sends them.  The writes carry the same guards as
        on PostgreSQL, where writers run concurrently: a rewrite checks the version it read, a conditional create
        claims its criteria (so a replayed submission that committed meanwhile is found, not stored twice).  A
        conflict there, or work that needs anything else, returns None and the caller runs ``work`` the ordinary
        way.  Write times are taken in the writer's turn, so lastUpdated still follows the order of commits.  The
        writes of sessions prepared meanwhile go in the same transaction (write_group.py).

        The reads run without a transaction around them: a read transaction held across the work would keep, with
        16 concurrent writers, some reader on the WAL at every moment, and SQLite can only restart a WAL nobody is
        reading (measured: the WAL grew past its checkpoint mark and commits slowed)."""
        with self.engine.connect() as reads:
            session = WriteSession(lambda: reads, self.indexer, reads=reads)
            try:
                result = work(session)
            except NeedsWriter:
                return None
        if not session.has_pending():
            return (result,)  # nothing to write (a replay found its earlier submission)
        if not self._group.send(session):  # sent with the others prepared meanwhile (write_group.py)
            return None
        _committed(session)
        return (session.restamped(result),)

    def _begin(self, stack: contextlib.ExitStack) -> Connection:
        """Open the write connection inside ``stack``, which ends it in reverse order: commit (or roll back),
        return the connection, leave the writers' queue."""
        # SQLite has one writer at a time: writers queue here (sqlite_writer.py) instead of polling the file lock.
        # PostgreSQL writers run concurrently; its row locks and unique keys decide.
        stack.enter_context(self._writer_lock)
        conn = stack.enter_context(self.engine.connect().execution_options(fhir_write=True))
        stack.enter_context(conn.begin())
        return conn

    def snapshot(self, work: Callable[[WriteSession], T]) -> T:
        """Run read-only ``work`` with the session interface (searches, current versions) and write nothing:
        how $extract computes what scoring would write."""
        with self.read_engine.connect() as conn:
            session = WriteSession(conn, self.indexer)
            result = work(session)
            if session.has_pending():
                raise AssertionError("snapshot work tried to write")
            return result

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        """The hot path (read by id): one prepared statement on a pooled DBAPI connection, no SQL construction."""
        row = self._routed(lambda engine: self._read_row(engine, resource_type, resource_id))
        if row is None:
            return None
        version_id, last_updated, deleted, content = row
        if isinstance(last_updated, str):  # SQLite hands DateTime columns back as text
            last_updated = datetime.fromisoformat(last_updated)
        return Stored(resource_type, resource_id, version_id, last_updated, bool(deleted), content)

    def _read_row(self, engine: Engine, resource_type: str, resource_id: str) -> Any:
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            if self._prepare_reads:  # kept prepared, its generic plan reused (store/engine.py, read pools)
                cursor.execute(self._read_sql, (resource_type, resource_id), prepare=True)
            else:
                cursor.execute(self._read_sql, (resource_type, resource_id))
            row = cursor.fetchone()
            cursor.close()
        except engine.dialect.loaded_dbapi.OperationalError:
            # Outside SQLAlchemy's Connection there is no disconnect handling: after a database restart every
            # pooled connection is dead, so drop them all (this request still answers 503).
            conn.invalidate()
            engine.dispose()
            raise
        finally:
            conn.close()
        return row

    def search(self, query: SearchQuery) -> SearchOutcome:
        def run(engine: Engine) -> SearchOutcome:
            with engine.connect() as conn:
                return search_with_includes(conn, query)

        return self._routed(run)

    def vread(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        def run(engine: Engine) -> Any:
            with engine.connect() as conn:
                params = {"rtype": resource_type, "rid": resource_id, "vid": version_id}
                return conn.execute(READ_VERSION, params).first()

        row = self._routed(run)
        return stored_from_row(row, row.method) if row else None

    def versions_at(self, resource_type: str, ids: Sequence[str], at: datetime) -> dict[str, Stored]:
        """The version of each resource that was current at ``at`` (a deletion, when it was deleted then); a
        resource that did not exist yet is not in the answer.  One query for a page of ids: what a Bulk Data
        export with transactionTime ``at`` holds of the resources written since."""
        if not ids:
            return {}
        v = resource_versions.c
        newest = (
            select(v.id, func.max(v.version_id).label("version_id"))
            .where(v.resource_type == resource_type, v.id.in_(list(ids)), v.last_updated <= at)
            .group_by(v.id)
            .subquery()
        )
        query = select(v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.content, v.method).join(
            newest,
            and_(v.resource_type == resource_type, v.id == newest.c.id, v.version_id == newest.c.version_id),
        )
        with self.read_engine.connect() as conn:
            return {row.id: stored_from_row(row, row.method) for row in conn.execute(query)}

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
                select(*CURRENT_COLUMNS).where(
                    resources.c.resource_type == resource_type, resources.c.deleted.is_(False)
                )
            ).all()
        return [stored_from_row(row) for row in rows]

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

        def run(engine: Engine) -> list[tuple[int, Stored]]:
            with engine.connect() as conn:
                return [(row.history_id, stored_from_row(row, row.method)) for row in conn.execute(query)]

        return self._routed(run)


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


def _committed(session: WriteSession) -> None:
    """The session's after-commit callbacks; one that fails is logged, never undoes the committed write."""
    for callback in session.committed:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")

"""One write transaction: versioned writes, batched inserts, conditional-key claims.  Used through
``Repository.write``; all SQL for writes lives here."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from fhir_server import fhirjson
from fhir_server.errors import precondition_failed
from fhir_server.scoring.history import ActiveFlags, Measure, ScoringContext, ScoringRead
from fhir_server.search.query import SearchQuery
from fhir_server.search.types import date as date_index
from fhir_server.store import clinical
from fhir_server.store.batch import Claim, NeedsWriter, PendingWrites, RetryTransaction, Update
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


__all__ = ["NeedsWriter", "RetryTransaction", "WriteSession"]


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


def _stamp(when: datetime) -> tuple[datetime, str, dict[str, Any]]:
    """A write time as the writes carry it: the datetime, its instant text, its date-index row."""
    text = instant(when)
    return when, text, date_index.index([text])[0]


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
    """Operations inside one write transaction.  Use through ``Repository.write``.

    ``conn`` may be a function that opens the connection (and, on SQLite, queues for the single writer): it is
    called on the first database access, so checks that need no database (validation) run before it.

    With ``reads`` (a connection for reads outside the writers' queue, each read on its own) the session answers
    the scoring reads and the replay check from it and queues every write, with a placeholder time; anything else
    raises ``NeedsWriter``.  ``join`` then hands it the writer's connection and the real time (Repository.write,
    optimistic).
    """

    def __init__(
        self, conn: Connection | Callable[[], Connection], indexer: Indexer, *, reads: Connection | None = None
    ) -> None:
        self._conn = conn if isinstance(conn, Connection) else None
        self._open = None if isinstance(conn, Connection) else conn
        self.indexer = indexer
        self._reads = reads
        # A time no content carries (a random millisecond of the year 9999), replaced when the writes are sent.
        placeholder = datetime(9999, 1, 1) + timedelta(milliseconds=random.randrange(30_000_000_000))
        self._now: datetime | None = placeholder if reads is not None else None
        self._placeholder: datetime | None = None
        # Writes are queued and sent together at the end (batch.py): a 100-entry transaction or a scored
        # submission is a round trip or two, not dozens.  A read that could see a queued write (same resource, or
        # same type for searches) sends them first, so reads see earlier writes.
        self._pending = PendingWrites()
        # A scoring read asked ahead, with the replay check (find_by_token): answered once, if asked again before
        # this transaction writes anything it reads.
        self._read_ahead: tuple[ScoringRead, ScoringContext] | None = None
        self.committed: list[Callable[[], None]] = []  # run by Repository.write once the transaction committed

    @property
    def conn(self) -> Connection:
        if self._reads is not None:
            raise NeedsWriter("this work needs the writer's connection")
        if self._conn is None:
            self._conn = self._open()  # type: ignore[misc]
        return self._conn

    def _reader(self) -> Connection:
        return self._reads if self._reads is not None else self.conn

    def join(self, conn: Connection) -> None:
        """Leave the reads for the writer's ``conn``; the queued writes take the time of this moment."""
        placeholder, now = self.now, utc_now()
        self._pending.restamp(_stamp(placeholder), _stamp(now))
        self._reads, self._conn, self._now = None, conn, now
        self._placeholder = placeholder

    def restamped(self, result: Any) -> Any:
        """A WriteResult made before the writer's turn, with the time its writes were given by ``join``."""
        placeholder = self._placeholder
        if placeholder is None or not isinstance(result, WriteResult) or result.stored.last_updated != placeholder:
            return result
        old, new = instant(placeholder), instant(self.now)
        content = result.stored.content.replace(old, new) if result.stored.content else None
        return replace(result, stored=replace(result.stored, last_updated=self.now, content=content))

    @property
    def now(self) -> datetime:
        """The transaction's timestamp, taken once the connection is open (after any wait for the SQLite writer),
        so lastUpdated follows the order in which writers got the database."""
        if self._now is None:
            _ = self.conn
            self._now = utc_now()
        return self._now

    @property
    def dialect(self) -> str:
        return self._reader().dialect.name

    def _flush_for(self, *resource_types: str) -> None:
        if not self._pending.types.isdisjoint(resource_types):
            self.flush()

    def find_by_token(
        self,
        resource_type: str,
        param: str,
        system: str,
        code: str,
        *,
        limit: int,
        scoring_read: ScoringRead | None = None,
    ) -> list[Stored]:
        """With ``scoring_read``, what ``scoring_context`` will be asked is read in the same round trip and kept
        for it (a submission's replay check, then its scoring)."""
        if scoring_read is None:
            self._flush_for(resource_type)
            return clinical.find_by_token(self._reader(), resource_type, param, system, code, limit)
        self._flush_for(resource_type, *clinical.READ_TYPES)
        token = (resource_type, param, system, code)
        found, context = clinical.find_by_token_with_context(self._reader(), token, limit, scoring_read)
        self._read_ahead = (scoring_read, context)
        return found

    def scoring_context(
        self,
        subject: tuple[str, str],
        measure: Measure | None,
        flags: ActiveFlags | None,
        patient_id: str | None,
    ) -> ScoringContext:
        """Scoring's ``ClinicalHistory`` (scoring/history.py), in one statement (see ``clinical.scoring_context``)."""
        asked, self._read_ahead = self._read_ahead, None
        if asked is not None and asked[0] == (subject, measure, flags, patient_id):
            return asked[1]
        self._flush_for(*clinical.READ_TYPES)
        return clinical.scoring_context(self._reader(), subject, measure, flags, patient_id)

    def encounter_results(
        self, encounter_id: str, known: Collection[str] = (), *, lock: str | None = None
    ) -> list[Stored]:
        """Scoring's ``ClinicalHistory.encounter_results``.  Observations this transaction has yet to send are sent
        first unless they are all ``known`` (the caller's own, which it does not need): a scored submission's
        writes then still go in one batch at commit."""
        pending = {key for key in self._pending.keys if key[0] == "Observation"}
        if any(resource_id not in known for _, resource_id in pending):
            self.flush()
        elif lock is not None and self.dialect != "postgresql":
            # SQLite's lock is its one writer: a transaction holds it from its first write, so writing first makes
            # the other rating's transaction wait for this one (or this one for it) before reading
            self.flush()
        return clinical.encounter_results(self._reader(), encounter_id, lock)

    def _touch(self, resource_type: str, resource_id: str) -> None:
        self._pending.touch(resource_type, resource_id)
        if resource_type in clinical.READ_TYPES:
            self._read_ahead = None  # it could no longer see everything this transaction wrote

    def has_pending(self) -> bool:
        return bool(self._pending)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (not if it rolls back or is retried): waking a
        worker for what the transaction queued, which it could not see before the commit."""
        if callback not in self.committed:
            self.committed.append(callback)

    def flush(self, *, last: bool = False) -> None:
        """Send the queued writes.  ``last``: the transaction commits right after (PostgreSQL then needs no
        statement to restore the planner settings of the writes' kept plans: the commit ends them)."""
        if not self._pending:
            return
        pending = self._pending.take()
        driver = self.conn.connection.driver_connection
        lost = pending.send_postgres(driver, last=last) if self.dialect == "postgresql" else pending.send_sqlite(driver)
        for claim in lost:
            self._settle_claim(claim)

    # -- reads inside the transaction -------------------------------------------------------------------
    def peek(self, resource_type: str, resource_id: str) -> Stored | None:
        """The current version of a resource this transaction does not write (the scoring's look at the
        session's Encounter): answered from the reads connection too, so it keeps SQLite's optimistic path."""
        if (resource_type, resource_id) in self._pending.keys:
            return self.current(resource_type, resource_id)
        row = self._reader().execute(_CURRENT, {"rtype": resource_type, "rid": resource_id}).first()
        return stored_from_row(row) if row else None

    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Stored | None:
        if (resource_type, resource_id) in self._pending.keys:
            self.flush()
        query = _CURRENT_FOR_UPDATE if lock and self.dialect == "postgresql" else _CURRENT
        row = self.conn.execute(query, {"rtype": resource_type, "rid": resource_id}).first()
        return stored_from_row(row) if row else None

    # -- writes -----------------------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], resource_id: str) -> WriteResult:
        """Insert version 1 of a new resource.  The primary key refuses a concurrent create of the same id."""
        return self._put_version(resource, resource_id, None, "POST")

    def rewrite(self, current: Stored, resource: dict[str, Any]) -> WriteResult:
        """A new version of a resource this transaction has read (``current``).  Written only if ``current`` is
        still the current version when the writes are sent; otherwise the whole transaction is retried."""
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
        self._touch(resource_type, resource_id)
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

        Called after this transaction's search found no match.  The claim is sent with the other writes
        (INSERT … ON CONFLICT DO NOTHING: no round trip of its own); when another resource holds the key,
        ``_settle_claim`` decides.  Two uncommitted claims collide on the unique key: the second waits for the
        first, then finds it committed and settles.
        """
        digest = hashlib.sha256(criteria.encode()).hexdigest()
        self._pending.claims.append(Claim(resource_type, digest, resource_id, still_matches))

    def _settle_claim(self, claim: Claim) -> None:
        """A committed claim by another resource that still matches means that resource committed after our
        search: retry, and the retry finds it.  A claim whose resource no longer matches is stale and is
        replaced; the DELETE names the resource id we checked, so a claim replaced concurrently is never removed
        by mistake."""
        key = conditional_keys.c
        holder = self.conn.execute(
            select(key.resource_id).where(key.resource_type == claim.resource_type, key.criteria_hash == claim.digest)
        ).scalar()
        if holder == claim.resource_id:
            return
        if holder is not None:
            if claim.still_matches(holder):
                raise RetryTransaction("conditional criteria were claimed by a concurrent write")
            self.conn.execute(
                delete(conditional_keys).where(
                    key.resource_type == claim.resource_type,
                    key.criteria_hash == claim.digest,
                    key.resource_id == holder,
                )
            )
        self.conn.execute(
            insert(conditional_keys).values(
                resource_type=claim.resource_type, criteria_hash=claim.digest, resource_id=claim.resource_id
            )
        )

    def version(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        if (resource_type, resource_id) in self._pending.keys:
            self.flush()
        row = self.conn.execute(READ_VERSION, {"rtype": resource_type, "rid": resource_id, "vid": version_id}).first()
        return stored_from_row(row, row.method) if row else None

    def search(self, query: SearchQuery) -> SearchOutcome:
        if query.resource_type in self._pending.types or (self._pending and query.reaches_other_types()):
            self.flush()
        return search_with_includes(self.conn, query)

    # -- internals --------------------------------------------------------------------------------------
    def _put_version(
        self, resource: dict[str, Any], resource_id: str, current: Stored | None, method: str
    ) -> WriteResult:
        resource_type = resource["resourceType"]
        version = 1 if current is None else current.version_id + 1
        content = with_meta(resource, resource_id, version, self.now)
        self._touch(resource_type, resource_id)
        if current is None:
            row = {"resource_type": resource_type, "id": resource_id, "version_id": version}
            self._pending.queue(resources, [{**row, "last_updated": self.now, "deleted": False, "content": content}])
        else:
            expected = current.version_id
            self._pending.updates.append(Update(resource_type, resource_id, expected, version, self.now, content))
        self._insert_version(resource_type, resource_id, version, method, content)
        self._replace_index(resource_type, resource_id, resource, had_rows=current is not None)
        stored = Stored(resource_type, resource_id, version, self.now, False, content, method)
        return WriteResult(stored, created=current is None or current.deleted)

    def _insert_version(self, rtype: str, rid: str, version: int, method: str, content: str | None) -> None:
        row = {"resource_type": rtype, "id": rid, "version_id": version, "last_updated": self.now}
        self._pending.queue(
            resource_versions, [{**row, "method": method, "deleted": content is None, "content": content}]
        )

    def _replace_index(
        self, resource_type: str, resource_id: str, resource: dict[str, Any] | None, *, had_rows: bool
    ) -> None:
        if had_rows:
            # Only the tables this type's parameters can fill (a Flag has no quantity rows), deferred to the flush.
            for kind in self.indexer.tables_for(resource_type):
                self._pending.stale.setdefault((kind, resource_type), []).append(resource_id)
        if resource is None:
            return
        identity = {"resource_type": resource_type, "resource_id": resource_id}
        for kind, rows in self.indexer.index_rows(resource_type, resource).items():
            self._pending.queue(INDEX_TABLES[kind], [{**identity, **row} for row in rows])

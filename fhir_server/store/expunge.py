"""SQL of erasure (``$expunge``, fhir_server/erasure/): finding the resources that name a patient or a resource,
removing resources with every version, index row and conditional key, and rewriting in place the versions of the
records that keep a pseudonym instead (the audit trail).  Every function runs on the caller's ``WriteSession``, so
an erasure is one transaction; the side tables (outboxes, sessions, links) are in store/expunge_rows.py.

Rewriting a stored version in place is the one exception to "every version is kept as written": it happens only
here, when what the version names was erased.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, tuple_, update

from fhir_server import fhirjson
from fhir_server.store.tables import INDEX_TABLES, conditional_keys, idx_reference, idx_token
from fhir_server.store.tables import resource_versions as versions_table
from fhir_server.store.tables import resources as resources_table

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Key = tuple[str, str]  # (resource type, id)
T = TypeVar("T")
CHUNK = 500  # values per IN list: well inside every driver's limit on bound parameters
_r, _v = resources_table.c, versions_table.c


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _by_type(keys: Collection[Key]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in sorted(set(keys)):
        grouped.setdefault(resource_type, []).append(resource_id)
    return grouped


# -- finding ------------------------------------------------------------------------------------------------
def references_to(
    session: WriteSession, params_by_type: Mapping[str, Sequence[str]], targets: Collection[Key]
) -> list[tuple[str, str, str, str, str]]:
    """(type, id, parameter, target type, target id) of every current resource whose reference parameter names one
    of ``targets``.  One probe of the reference index's value index per type (its leading columns are the type and
    the parameter), so the cost follows the number of types, not the size of the index."""
    ref = idx_reference.c
    wanted = set(targets)
    ids = sorted({target_id for _, target_id in wanted})
    found: list[tuple[str, str, str, str, str]] = []
    for resource_type, params in sorted(params_by_type.items()):
        if not params:
            continue
        for chunk in chunks(ids):
            rows = session.conn.execute(
                select(ref.resource_type, ref.resource_id, ref.param, ref.target_type, ref.target_id).where(
                    ref.resource_type == resource_type, ref.param.in_(list(params)), ref.target_id.in_(list(chunk))
                )
            )
            found += [(r[0], r[1], r[2], r[3], r[4]) for r in rows if (r.target_type, r.target_id) in wanted]
    return found


def current_containing(
    session: WriteSession, resource_type: str, needles: Sequence[str], since: datetime | None = None
) -> list[tuple[str, str]]:
    """(id, content) of the current resources of a type (written since ``since``) whose content contains one of
    ``needles``: what no search parameter indexes (a Binary's securityContext, an AuditEvent's base64 query).  A
    scan of the type's rows; the caller decides on each candidate."""
    if not needles:
        return []
    matches = or_(*(_r.content.contains(needle, autoescape=True) for needle in needles))
    conditions = [_r.resource_type == resource_type, _r.content.is_not(None), matches]
    if since is not None:
        conditions.append(_r.last_updated >= since)
    query = select(_r.id, _r.content).where(*conditions)
    return [(row.id, row.content) for row in session.conn.execute(query)]


def deleted_containing(session: WriteSession, needle: str) -> list[tuple[str, str, str]]:
    """(type, id, last content) of the soft-deleted resources whose last version before the deletion contains
    ``needle``: a deletion removes a resource's index rows, so only its stored versions still say whose it was."""
    before = and_(_v.resource_type == _r.resource_type, _v.id == _r.id, _v.version_id == _r.version_id - 1)
    query = (
        select(_v.resource_type, _v.id, _v.content)
        .join(resources_table, before)
        .where(_r.deleted.is_(True), _v.content.contains(needle, autoescape=True))
    )
    return [(row.resource_type, row.id, row.content) for row in session.conn.execute(query)]


def existing(session: WriteSession, keys: Collection[Key]) -> dict[Key, str | None]:
    """The current content of each of ``keys`` that has a row (None when it is deleted)."""
    found: dict[Key, str | None] = {}
    for resource_type, ids in _by_type(keys).items():
        for chunk in chunks(ids):
            query = select(_r.id, _r.content).where(_r.resource_type == resource_type, _r.id.in_(list(chunk)))
            found.update({(resource_type, row.id): row.content for row in session.conn.execute(query)})
    return found


def has_versions(session: WriteSession, key: Key) -> bool:
    query = select(_v.history_id).where(_v.resource_type == key[0], _v.id == key[1]).limit(1)
    return session.conn.execute(query).first() is not None


def measure_codes(session: WriteSession, ids: Sequence[str], system: str) -> list[tuple[str, str]]:
    """(Observation id, its ``code`` of ``system``) of these Observations, from the index."""
    tok = idx_token.c
    found = []
    for chunk in chunks(ids):
        query = select(tok.resource_id, tok.code).where(
            tok.resource_type == "Observation",
            tok.resource_id.in_(list(chunk)),
            tok.param == "code",
            tok.system == system,
        )
        found += [(row[0], row[1]) for row in session.conn.execute(query)]
    return found


def earliest_write(session: WriteSession, keys: Collection[Key]) -> datetime | None:
    """When the oldest version of these resources was written."""
    earliest: datetime | None = None
    for resource_type, ids in _by_type(keys).items():
        for chunk in chunks(ids):
            query = select(func.min(_v.last_updated)).where(_v.resource_type == resource_type, _v.id.in_(list(chunk)))
            value = session.conn.execute(query).scalar()
            if isinstance(value, str):  # SQLite hands an aggregate of a DateTime back as text
                value = datetime.fromisoformat(value)
            if value is not None and (earliest is None or value < earliest):
                earliest = value
    return earliest


# -- removing -----------------------------------------------------------------------------------------------
def remove(session: WriteSession, keys: Collection[Key]) -> dict[str, int]:
    """Every version, the current row, every index row and conditional key of these resources.  Counts per part:
    ``resources``, ``versions``, ``index rows``, ``conditional keys``."""
    counts = {"resources": 0, "versions": 0, "index rows": 0, "conditional keys": 0}
    conn = session.conn
    for resource_type, ids in _by_type(keys).items():
        for chunk in chunks(ids):
            some = list(chunk)
            counts["versions"] += conn.execute(
                delete(versions_table).where(_v.resource_type == resource_type, _v.id.in_(some))
            ).rowcount
            counts["resources"] += conn.execute(
                delete(resources_table).where(_r.resource_type == resource_type, _r.id.in_(some))
            ).rowcount
            for table in INDEX_TABLES.values():
                counts["index rows"] += conn.execute(
                    delete(table).where(table.c.resource_type == resource_type, table.c.resource_id.in_(some))
                ).rowcount
            key = conditional_keys.c
            counts["conditional keys"] += conn.execute(
                delete(conditional_keys).where(key.resource_type == resource_type, key.resource_id.in_(some))
            ).rowcount
    return counts


# -- rewriting in place -------------------------------------------------------------------------------------
def versions_of(session: WriteSession, keys: Collection[Key]) -> list[tuple[int, str, str, str | None]]:
    """(history id, type, id, content) of every version of these resources."""
    found = []
    for resource_type, ids in _by_type(keys).items():
        for chunk in chunks(ids):
            query = select(_v.history_id, _v.id, _v.content).where(
                _v.resource_type == resource_type, _v.id.in_(list(chunk))
            )
            found += [(row.history_id, resource_type, row.id, row.content) for row in session.conn.execute(query)]
    return found


def rewrite_versions(session: WriteSession, contents: Mapping[int, str]) -> None:
    """New content for these versions (by history id), version numbers and times unchanged."""
    if not contents:
        return
    statement = update(versions_table).where(_v.history_id == bindparam("hid")).values(content=bindparam("new_content"))
    session.conn.execute(statement, [{"hid": hid, "new_content": text} for hid, text in contents.items()])


def rewrite_current(session: WriteSession, contents: Mapping[Key, str]) -> int:
    """New content for these resources' current rows, and their index rows rebuilt from it.  Returns how many
    index rows were written."""
    if not contents:
        return 0
    conn = session.conn
    statement = (
        update(resources_table)
        .where(_r.resource_type == bindparam("rtype"), _r.id == bindparam("rid"))
        .values(content=bindparam("new_content"))
    )
    conn.execute(statement, [{"rtype": t, "rid": i, "new_content": text} for (t, i), text in contents.items()])
    keys = list(contents)
    pending: dict[str, list[dict[str, Any]]] = {}
    for (resource_type, resource_id), text in contents.items():
        identity = {"resource_type": resource_type, "resource_id": resource_id}
        for kind, rows in session.indexer.index_rows(resource_type, fhirjson.loads_stored(text)).items():
            pending.setdefault(kind, []).extend({**identity, **row} for row in rows)
    for chunk in chunks(keys):
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(tuple_(table.c.resource_type, table.c.resource_id).in_(list(chunk))))
    written = 0
    for kind, rows in pending.items():
        if rows:
            conn.execute(insert(INDEX_TABLES[kind]), rows)
            written += len(rows)
    return written

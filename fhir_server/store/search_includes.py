"""_include and _revinclude (with :iterate): the resources a page refers to, or that refer to it.

Bounded: iterate follows at most MAX_ROUNDS hops and the whole include set is capped at MAX_INCLUDED resources.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from fhir_server.search.query import Include
from fhir_server.store.records import Stored
from fhir_server.store.tables import idx_reference, resources

MAX_ROUNDS = 4
MAX_INCLUDED = 1000


def run_includes(conn: Connection, includes: list[Include], page: list[Stored]) -> tuple[list[Stored], bool]:
    """(included resources not already in the page, whether the cap cut the set short)."""
    seen = {(s.resource_type, s.id) for s in page}
    included: list[Stored] = []
    frontier = page
    for round_number in range(MAX_ROUNDS):
        active = [inc for inc in includes if round_number == 0 or inc.iterate]
        if not active or not frontier:
            break
        keys: list[tuple[str, str]] = []
        for inc in active:
            keys.extend(_follow(conn, inc, frontier))
        new_keys = list(dict.fromkeys(k for k in keys if k not in seen))
        if len(included) + len(new_keys) > MAX_INCLUDED:
            new_keys = new_keys[: MAX_INCLUDED - len(included)]
            included.extend(_load(conn, new_keys))
            return included, True
        frontier = _load(conn, new_keys)
        seen.update(new_keys)
        included.extend(frontier)
    return included, False


def _follow(conn: Connection, inc: Include, frontier: list[Stored]) -> list[tuple[str, str]]:
    ref = idx_reference.c
    if not inc.reverse:
        sources = [s for s in frontier if inc.source_type in ("*", s.resource_type)]
        if not sources:
            return []
        conditions = [_rows_of(ref.resource_type, ref.resource_id, sources), ref.target_id.is_not(None)]
        if inc.param is not None:
            conditions.append(ref.param == inc.param.code)
        if inc.target_type:
            conditions.append(ref.target_type == inc.target_type)
        query = select(ref.target_type, ref.target_id).where(*conditions)
    else:
        targets = frontier if inc.target_type is None else [s for s in frontier if s.resource_type == inc.target_type]
        if not targets:
            return []
        conditions = [_rows_of(ref.target_type, ref.target_id, targets)]
        if inc.source_type != "*":
            conditions.append(ref.resource_type == inc.source_type)
        if inc.param is not None:
            conditions.append(ref.param == inc.param.code)
        query = select(ref.resource_type, ref.resource_id).where(*conditions)
    return [(row[0], row[1]) for row in conn.execute(query.limit(MAX_INCLUDED + 1))]


def _rows_of(type_column, id_column, stored: list[Stored]):  # type: ignore[no-untyped-def]
    by_type: dict[str, list[str]] = {}
    for s in stored:
        by_type.setdefault(s.resource_type, []).append(s.id)
    return or_(*(and_(type_column == t, id_column.in_(ids)) for t, ids in by_type.items()))


def _load(conn: Connection, keys: list[tuple[str, str]]) -> list[Stored]:
    if not keys:
        return []
    r = resources.c
    rows = conn.execute(
        select(r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content).where(
            _rows_of(r.resource_type, r.id, [Stored(t, i, 0, None, False, None) for t, i in keys]),  # type: ignore[arg-type]
            r.deleted.is_(False),
        )
    ).all()
    found = {(row.resource_type, row.id): row for row in rows}
    return [
        Stored(row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content)
        for key in keys
        if (row := found.get(key)) is not None
    ]

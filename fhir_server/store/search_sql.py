"""Run a parsed search: filters, sort keys, keyset paging both ways, totals and _include/_revinclude.

Paging is keyset (``WHERE (sort keys, id) > last row's``), never OFFSET: a link stays valid and cheap however deep
it is, and resources added while a client pages through do not shift what it sees.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.errors import FhirError
from fhir_server.search import combos
from fhir_server.search.fhirdate import MAX_DATE, MIN_DATE
from fhir_server.search.query import SearchQuery, SortKey
from fhir_server.search.types.string import PART as STRING_PART
from fhir_server.store.records import Stored
from fhir_server.store.search_clauses import clause_sql
from fhir_server.store.search_combo import PreparedPage, combo_page
from fhir_server.store.search_includes import run_includes
from fhir_server.store.search_keyset import in_key_order
from fhir_server.store.search_shapes import PLANS, Binder, Keyset, Plan
from fhir_server.store.tables import INDEX_TABLES, resources

_MAX_STR, _MIN_STR = "\U0010ffff", ""
_SORT_COLUMNS = {
    "string": "value_norm",
    "token": "code",
    "number": "value",
    "quantity": "value",
    "reference": "target_id",
    "uri": "value",
}
_SENTINELS: dict[str, tuple[Any, Any]] = {  # (missing when ascending, missing when descending): missing sorts last
    "date": (MAX_DATE, MIN_DATE),
    "number": (1e308, -1e308),
    "quantity": (1e308, -1e308),
}


# The Python type of each sort key, to refuse a forged cursor before it reaches SQL.
_KEY_TYPES: dict[str, Any] = {
    "_id": str,
    "_lastUpdated": datetime,
    "date": datetime,
    "number": (int, float),
    "quantity": (int, float),
}


class Page:
    def __init__(self, rows: list[Stored], total: int | None, next_cursor: str | None, prev_cursor: str | None):
        self.rows, self.total, self.next_cursor, self.prev_cursor = rows, total, next_cursor, prev_cursor


# -- cursors ------------------------------------------------------------------------------------------------
def encode_cursor(values: list[Any], direction: str = "next") -> str:
    packed = [{"d": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps({"k": packed, "dir": direction})).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[list[Any], str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = [datetime.fromisoformat(v["d"]) if isinstance(v, dict) else v for v in data["k"]]
        direction = data.get("dir", "next")
        if direction not in ("next", "prev") or not isinstance(values, list):
            raise ValueError(direction)
        return values, direction
    except Exception:
        raise FhirError(400, "value", "The paging cursor is invalid or from another server") from None


# -- sorting ------------------------------------------------------------------------------------------------
def _sort_expression(resource_type: str, key: SortKey) -> ColumnElement[Any]:
    code, kind = key.param.code, key.param.type
    if code == "_id":
        return resources.c.id
    if code == "_lastUpdated":
        return resources.c.last_updated
    table = INDEX_TABLES[kind]
    if kind == "date":
        column, aggregate = (table.c.high, func.max) if key.descending else (table.c.low, func.min)
    else:
        column = table.c[_SORT_COLUMNS[kind]]
        aggregate = func.max if key.descending else func.min
    missing = _SENTINELS.get(kind, (_MAX_STR, _MIN_STR))[1 if key.descending else 0]
    where = [
        table.c.resource_type == resource_type,
        table.c.resource_id == resources.c.id,
        table.c.param.in_(key.param.row_params),
    ]
    if kind == "string":  # whole strings only, not their word starts (search/types/string.py)
        where.append(table.c.value_exact != STRING_PART)
    value = select(aggregate(column)).where(*where).scalar_subquery()
    return func.coalesce(value, missing)


# -- the search ---------------------------------------------------------------------------------------------
def _statements(query: SearchQuery, keyset: Keyset | None, b: Binder) -> dict[str, Any]:
    """The count and/or page statements of a query's shape, every value bound through ``b``."""
    where = [resources.c.resource_type == query.resource_type, resources.c.deleted.is_(False)]
    where.extend(clause_sql(query.resource_type, clause, b) for clause in query.clauses)
    statements: dict[str, Any] = {}
    if query.total in ("accurate", "estimate") or query.summary == "count":
        statements["count"] = select(func.count()).select_from(resources).where(and_(*where))
    if query.summary == "count" or query.count == 0:
        return statements
    combo = combos.match(query)
    if combo is not None:  # the page from one range of a combination index, in the order computed below
        statements["page"] = combo_page(query, combo, keyset, b)
        return statements

    keys = [_sort_expression(query.resource_type, k).label(f"k{i}") for i, k in enumerate(query.sort)]
    descending = [k.descending for k in query.sort] + [False]
    inner = (
        select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            resources.c.deleted,
            resources.c.content,
            *keys,
        )
        .where(and_(*where))
        .subquery()
    )
    key_columns = [inner.c[f"k{i}"] for i in range(len(keys))] + [inner.c.id]
    statements["page"] = in_key_order(select(inner), key_columns, descending, keyset, b, query.count + 1)
    return statements


def _keyset(query: SearchQuery) -> Keyset | None:
    if not query.cursor:
        return None
    values, direction = decode_cursor(query.cursor)
    expected = [_KEY_TYPES.get(k.param.code, _KEY_TYPES.get(k.param.type, str)) for k in query.sort] + [str]
    if len(values) != len(expected) or not all(
        isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, expected, strict=True)
    ):
        raise FhirError(400, "value", "The paging cursor does not belong to this search")
    return Keyset(tuple(values), direction)


def run_search(conn: Connection, query: SearchQuery) -> Page:
    keyset = _keyset(query)
    plan, params = PLANS.plan(conn.dialect.name, query, keyset, lambda b: _statements(query, keyset, b))
    total = None
    if "count" in plan.statements:
        total = conn.execute(plan.statements["count"], params).scalar_one()
    if "page" not in plan.statements:
        return Page([], total, None, None)

    rows = _page_rows(conn, plan, params)
    more = len(rows) > query.count
    rows = rows[: query.count]
    flip = keyset is not None and keyset.direction == "prev"
    if flip:
        rows.reverse()
    # (resource_type, id, version_id, last_updated, deleted, content, k0, k1, ...): both statements' columns
    page = [Stored(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
    if total is None and not query.cursor and not more:
        total = len(page)
    sort_keys = len(query.sort)

    def key_of(row: Any) -> list[Any]:
        return [row[6 + i] for i in range(sort_keys)] + [row[1]]

    next_cursor = encode_cursor(key_of(rows[-1])) if rows and (more if not flip else True) else None
    prev_cursor = encode_cursor(key_of(rows[0]), "prev") if rows and (query.cursor and (not flip or more)) else None
    return Page(page, total, next_cursor, prev_cursor)


def _page_rows(conn: Connection, plan: Plan, params: dict[str, Any]) -> list[Any]:
    page = plan.statements["page"]
    if conn.dialect.name == "postgresql" and (prepared := PreparedPage.of(plan)) is not None:
        return prepared.rows(conn, params)
    return conn.execute(page, params).all()


class SearchOutcome:
    """A page of matches, the resources _include/_revinclude brought in, and paging cursors."""

    def __init__(self, page: Page, included: list[Stored], truncated: bool) -> None:
        self.matches = page.rows
        self.total = page.total
        self.next_cursor = page.next_cursor
        self.prev_cursor = page.prev_cursor
        self.included = included
        self.includes_truncated = truncated


def search_with_includes(conn: Connection, query: SearchQuery) -> SearchOutcome:
    page = run_search(conn, query)
    included, truncated = run_includes(conn, query.includes, page.rows) if query.includes else ([], False)
    return SearchOutcome(page, included, truncated)

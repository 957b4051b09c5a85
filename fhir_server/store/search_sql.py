"""SQL for parsed searches.  Every user value reaches the database as a bound parameter.

Each clause becomes ``resources.id IN (SELECT resource_id FROM idx_<type> WHERE param = … AND (OR of values))``;
clauses AND together.  Paging is keyset on the resource id, so links keep working while data is added.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, false, func, literal, not_, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.errors import FhirError
from fhir_server.search import conditions as c
from fhir_server.search.query import Clause, SearchQuery
from fhir_server.store.records import Stored, utc_now
from fhir_server.store.tables import INDEX_TABLES, resources

_TABLE_FOR_TYPE = {
    "token": "token",
    "string": "string",
    "date": "date",
    "reference": "reference",
    "quantity": "quantity",
    "number": "number",
    "uri": "uri",
}


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return str(orjson.loads(base64.urlsafe_b64decode(padded))["after"])
    except Exception:
        raise FhirError(400, "value", "The paging cursor is invalid or from another server") from None


def run_search(conn: Connection, query: SearchQuery) -> tuple[list[Stored], int | None, str | None]:
    """(page of current resources, total when asked or known, cursor of the next page or None)."""
    where = [resources.c.resource_type == query.resource_type, resources.c.deleted.is_(False)]
    where.extend(_clause_sql(query.resource_type, clause) for clause in query.clauses)
    total = None
    if query.total == "accurate" or query.summary == "count" or query.total == "estimate":
        total = conn.execute(select(func.count()).select_from(resources).where(and_(*where))).scalar_one()
    if query.summary == "count" or query.count == 0:
        return [], total, None
    page_where = list(where)
    if query.cursor:
        page_where.append(resources.c.id > decode_cursor(query.cursor))
    rows = conn.execute(
        select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            resources.c.deleted,
            resources.c.content,
        )
        .where(and_(*page_where))
        .order_by(resources.c.id)
        .limit(query.count + 1)
    ).all()
    has_more = len(rows) > query.count
    rows = rows[: query.count]
    page = [Stored(r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content) for r in rows]
    if total is None and not has_more and not query.cursor:
        total = len(page)
    return page, total, encode_cursor(rows[-1].id) if has_more else None


def _clause_sql(resource_type: str, clause: Clause) -> ColumnElement[bool]:
    param = clause.param
    if param.code == "_id":
        ids = [cond.code for cond in clause.conditions if isinstance(cond, c.TokenMatch)]
        expr = resources.c.id.in_(ids)
    elif param.code == "_lastUpdated":
        expr = or_(*(_date(resources.c.last_updated, resources.c.last_updated, cond) for cond in clause.conditions))
    else:
        table = INDEX_TABLES[_TABLE_FOR_TYPE[param.type]]
        base = and_(table.c.resource_type == resource_type, table.c.param == param.code)
        missing = [cond for cond in clause.conditions if isinstance(cond, c.MissingMatch)]
        if missing:
            has_value = resources.c.id.in_(select(table.c.resource_id).where(base))
            return not_(has_value) if missing[0].missing else has_value
        matches = or_(*(_value_sql(table, cond) for cond in clause.conditions))
        expr = resources.c.id.in_(select(table.c.resource_id).where(base, matches))
    return not_(expr) if clause.negate else expr


def _value_sql(table: Any, cond: c.Condition) -> ColumnElement[bool]:
    if isinstance(cond, c.TokenMatch):
        return _token(table, cond)
    if isinstance(cond, c.StringMatch):
        return _string(table, cond)
    if isinstance(cond, c.DateMatch):
        return _date(table.c.low, table.c.high, cond)
    if isinstance(cond, c.NumberMatch):
        return _number(table, cond)
    if isinstance(cond, c.ReferenceMatch):
        return _reference(table, cond)
    if isinstance(cond, c.UriMatch):
        return _uri(table, cond)
    raise AssertionError(f"no SQL for {cond!r}")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token(table: Any, cond: c.TokenMatch) -> ColumnElement[bool]:
    if cond.text is not None:
        return table.c.text.like(_like_escape(cond.text) + "%", escape="\\")
    parts = []
    if cond.code is not None:
        parts.append(table.c.code == cond.code)
    if cond.system == "":
        parts.append(table.c.system.is_(None))
    elif cond.system is not None:
        parts.append(table.c.system == cond.system)
    return and_(*parts) if parts else true()


def _string(table: Any, cond: c.StringMatch) -> ColumnElement[bool]:
    if cond.mode == "exact":
        return table.c.value_exact == cond.value
    pattern = _like_escape(cond.value) + "%"
    if cond.mode == "contains":
        pattern = "%" + pattern
    return table.c.value_norm.like(pattern, escape="\\")


def _date(low: Any, high: Any, cond: c.DateMatch) -> ColumnElement[bool]:
    q_low, q_high = cond.low, cond.high
    inside = and_(low >= q_low, high <= q_high)
    match cond.prefix:
        case "eq":
            return inside
        case "ne":
            return not_(inside)
        case "gt":
            return high > q_high
        case "lt":
            return low < q_low
        case "ge":
            return or_(high > q_high, inside)
        case "le":
            return or_(low < q_low, inside)
        case "sa":
            return low > q_high
        case "eb":
            return high < q_low
        case "ap":
            margin = _approximate_margin(q_low)
            return and_(low <= q_high + margin, high >= q_low - margin)
    raise AssertionError(cond.prefix)


def _approximate_margin(value: datetime) -> timedelta:
    """``ap``: 10% of the distance between the value and now, at least a day (as HAPI does)."""
    return max(abs(utc_now() - value) * 0.1, timedelta(days=1))


def _number(table: Any, cond: c.NumberMatch) -> ColumnElement[bool]:
    value = table.c.value
    match cond.prefix:
        case "eq":
            expr = and_(value >= cond.low, value < cond.high)
        case "ne":
            expr = not_(and_(value >= cond.low, value < cond.high))
        case "gt" | "sa":
            expr = value > cond.value
        case "lt" | "eb":
            expr = value < cond.value
        case "ge":
            expr = value >= cond.value
        case "le":
            expr = value <= cond.value
        case "ap":
            margin = abs(cond.value) * 0.1
            expr = and_(value >= cond.value - margin, value <= cond.value + margin)
        case _:
            raise AssertionError(cond.prefix)
    if cond.code is not None:
        expr = and_(expr, table.c.code == cond.code)
    if cond.system is not None:
        expr = and_(expr, table.c.system == cond.system)
    return expr


def _reference(table: Any, cond: c.ReferenceMatch) -> ColumnElement[bool]:
    if cond.url is not None:
        expr = table.c.url == cond.url
        return and_(expr, table.c.version == cond.version) if cond.version else expr
    parts = [table.c.target_id == cond.target_id]
    if cond.target_type:
        parts.append(table.c.target_type == cond.target_type)
    return and_(*parts)


def _uri(table: Any, cond: c.UriMatch) -> ColumnElement[bool]:
    if cond.mode == "below":
        return table.c.value.like(_like_escape(cond.value) + "%", escape="\\")
    if cond.mode == "above":
        return literal(cond.value).like(table.c.value + "%")
    return table.c.value == cond.value


__all__ = ["decode_cursor", "encode_cursor", "false", "run_search"]

"""SQL for search clauses.  Every user value reaches the database as a bound parameter, through the ``Binder`` of
the query's shape (store/search_shapes.py): a value written into the SQL any other way would stay in the statement
kept for that shape and be searched for by the next query of it.

A clause constrains a resources-table alias: plain clauses become ``id IN (SELECT resource_id FROM idx_<type>
WHERE param = … AND (OR of values))``; chains and ``_has`` nest the same construction on another type.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, Table, and_, func, literal, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.search import conditions as c
from fhir_server.search.query import (
    AllClause,
    AnyClause,
    ChainClause,
    Clause,
    CompartmentClause,
    CompositeClause,
    HasClause,
    OrClause,
)
from fhir_server.store.records import utc_now
from fhir_server.store.search_shapes import Binder
from fhir_server.store.tables import INDEX_TABLES, idx_reference, resources


def clause_sql(resource_type: str, clause: AnyClause, b: Binder, rows: Any = resources) -> ColumnElement[bool]:
    """A condition on ``rows`` (the resources table or an alias of it) for one clause."""
    if isinstance(clause, OrClause):
        return or_(*(clause_sql(resource_type, alt, b, rows) for alt in clause.alternatives))
    if isinstance(clause, AllClause):  # no parts: every resource (an export's "any patient")
        return and_(true(), *(clause_sql(resource_type, part, b, rows) for part in clause.parts))
    if isinstance(clause, ChainClause):
        target = resources.alias()
        matching_targets = select(target.c.id).where(
            target.c.resource_type == clause.target_type,
            target.c.deleted.is_(False),
            clause_sql(clause.target_type, clause.inner, b, target),
        )
        ref = idx_reference.alias()
        return rows.c.id.in_(
            select(ref.c.resource_id).where(
                ref.c.resource_type == resource_type,
                ref.c.param == clause.reference.code,
                ref.c.target_type == clause.target_type,
                ref.c.target_id.in_(matching_targets),
            )
        )
    if isinstance(clause, HasClause):
        source = resources.alias()
        matching_sources = select(source.c.id).where(
            source.c.resource_type == clause.source_type,
            source.c.deleted.is_(False),
            clause_sql(clause.source_type, clause.inner, b, source),
        )
        ref = idx_reference.alias()
        return rows.c.id.in_(
            select(ref.c.target_id).where(
                ref.c.resource_type == clause.source_type,
                ref.c.param == clause.reference.code,
                ref.c.target_type == resource_type,
                ref.c.resource_id.in_(matching_sources),
            )
        )
    if isinstance(clause, CompartmentClause):
        return _compartment(resource_type, clause, b, rows)
    if isinstance(clause, CompositeClause):
        return or_(*(_composite(resource_type, clause, alt, b, rows) for alt in clause.alternatives))
    return _plain(resource_type, clause, b, rows)


def _compartment(resource_type: str, clause: CompartmentClause, b: Binder, rows: Any) -> ColumnElement[bool]:
    codes = [p.code for p in clause.params]
    ref = idx_reference.alias()
    member = rows.c.id.in_(
        select(ref.c.resource_id).where(
            ref.c.resource_type == resource_type,
            ref.c.param.in_(codes),
            ref.c.target_type == clause.owner_type,
            ref.c.target_id == b(clause, "owner_id"),
        )
    )
    if not clause.exclusive:
        return member
    other = idx_reference.alias()
    # Another owner named by id, or by an absolute URL ending in Owner/{id} (its server cannot be told apart).
    names_another = or_(
        and_(other.c.target_type == clause.owner_type, other.c.target_id != b(clause, "owner_id")),
        and_(other.c.target_type.is_(None), other.c.url.like(f"%{clause.owner_type}/%")),
    )
    foreign = select(literal(1)).where(
        other.c.resource_id == rows.c.id,
        other.c.resource_type == resource_type,
        other.c.param.in_(codes),
        names_another,
    )
    return and_(member, not_(foreign.exists()))


def _composite(
    resource_type: str, clause: CompositeClause, alternative: tuple, b: Binder, rows: Any
) -> ColumnElement[bool]:
    """All components match index rows of the same resource and the same element (of one source parameter, for
    a union parameter: an Observation's own code and value, or one component's)."""
    return or_(*(_composite_rows(resource_type, code, alternative, b, rows) for code in clause.param.row_params))


def _composite_rows(resource_type: str, code: str, alternative: tuple, b: Binder, rows: Any) -> ColumnElement[bool]:
    tables = [INDEX_TABLES[component.type].alias() for component, _ in alternative]
    first = tables[0]
    conditions = []
    for number, (table, (_, condition)) in enumerate(zip(tables, alternative, strict=True)):
        conditions += [
            table.c.resource_type == resource_type,
            table.c.param == f"{code}#{number}",
            _value_sql(table, condition, b),
        ]
        if number:
            conditions += [table.c.resource_id == first.c.resource_id, table.c.element == first.c.element]
    return rows.c.id.in_(select(first.c.resource_id).where(*conditions))


def _plain(resource_type: str, clause: Clause, b: Binder, rows: Any) -> ColumnElement[bool]:
    param = clause.param
    if param.code == "_id":
        ids = [b(cond, "code") for cond in clause.conditions if isinstance(cond, c.TokenMatch)]
        expr = rows.c.id.in_(ids)
    elif param.code == "_lastUpdated":
        expr = or_(*(date_sql(rows.c.last_updated, rows.c.last_updated, cond, b) for cond in clause.conditions))
    else:
        table = INDEX_TABLES[param.type].alias()
        base = and_(table.c.resource_type == resource_type, _param_is(table, param))
        missing = [cond for cond in clause.conditions if isinstance(cond, c.MissingMatch)]
        if missing:
            has_value = rows.c.id.in_(select(table.c.resource_id).where(base))
            if param.type == "reference":
                # A Reference with only an identifier has a value too; it is indexed as "<code>:identifier" tokens.
                tokens = INDEX_TABLES["token"].alias()
                identified = [f"{name}:identifier" for name in param.row_params]
                has_value = or_(has_value, rows.c.id.in_(select(tokens.c.resource_id).where(
                    tokens.c.resource_type == resource_type, tokens.c.param.in_(identified))))  # fmt: skip
            return not_(has_value) if missing[0].missing else has_value
        matches = or_(*(_value_sql(table, cond, b) for cond in clause.conditions))
        expr = rows.c.id.in_(select(table.c.resource_id).where(base, matches))
    return not_(expr) if clause.negate else expr


def _param_is(table: Table, param: Any) -> ColumnElement[bool]:
    names = param.row_params
    return table.c.param == names[0] if len(names) == 1 else table.c.param.in_(names)


def _value_sql(table: Table, cond: c.Condition, b: Binder) -> ColumnElement[bool]:
    if isinstance(cond, c.TokenMatch):
        return _token(table, cond, b)
    if isinstance(cond, c.StringMatch):
        return _string(table, cond, b)
    if isinstance(cond, c.DateMatch):
        return date_sql(table.c.low, table.c.high, cond, b)
    if isinstance(cond, c.NumberMatch):
        return _number(table, cond, b)
    if isinstance(cond, c.ReferenceMatch):
        return _reference(table, cond, b)
    if isinstance(cond, c.UriMatch):
        return _uri(table, cond, b)
    raise AssertionError(f"no SQL for {cond!r}")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Values the SQL needs derived; the name of each is part of its bound parameter's (search_shapes.Binder).
def starts(text: str) -> str:
    return _like_escape(text) + "%"


def contains(text: str) -> str:
    return "%" + _like_escape(text) + "%"


def below_version(version: str) -> str:
    return _like_escape(version) + ".%"


def like_escaped(text: str) -> str:
    return _like_escape(text)


def length(text: str) -> int:
    return len(text)


def _token(table: Table, cond: c.TokenMatch, b: Binder) -> ColumnElement[bool]:
    if cond.text is not None:
        return table.c.text.like(b(cond, "text", starts), escape="\\")
    parts = []
    if cond.code is not None:
        parts.append(table.c.code == b(cond, "code"))
    if cond.system == "":
        parts.append(table.c.system.is_(None))
    elif cond.system is not None:
        parts.append(table.c.system == b(cond, "system"))
    return and_(*parts) if parts else true()


def _string(table: Table, cond: c.StringMatch, b: Binder) -> ColumnElement[bool]:
    if cond.mode == "exact":
        return table.c.value_exact == b(cond, "value")
    pattern = b(cond, "value", contains if cond.mode == "contains" else starts)
    return table.c.value_norm.like(pattern, escape="\\")


def date_sql(low: Any, high: Any, cond: c.DateMatch, b: Binder) -> ColumnElement[bool]:
    """FHIR R4 §3.1.1.4.2: the resource's range [low, high] against the parameter's range."""
    q_low, q_high = b(cond, "low"), b(cond, "high")
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
            return and_(low <= b(cond, "high", plus_margin), high >= b(cond, "low", minus_margin))
    raise AssertionError(cond.prefix)


def _approximate_margin(value: datetime) -> timedelta:
    """``ap``: 10% of the distance between the value and now, at least a day (as HAPI does)."""
    return max(abs(utc_now() - value) * 0.1, timedelta(days=1))


def plus_margin(value: datetime) -> datetime:
    return value + _approximate_margin(value)


def minus_margin(value: datetime) -> datetime:
    return value - _approximate_margin(value)


def ten_percent_over(value: float) -> float:
    return value + abs(value) * 0.1


def ten_percent_under(value: float) -> float:
    return value - abs(value) * 0.1


def _number(table: Table, cond: c.NumberMatch, b: Binder) -> ColumnElement[bool]:
    value = table.c.value
    match cond.prefix:
        case "eq":
            expr = and_(value >= b(cond, "low"), value < b(cond, "high"))
        case "ne":
            expr = not_(and_(value >= b(cond, "low"), value < b(cond, "high")))
        case "gt" | "sa":
            expr = value > b(cond, "value")
        case "lt" | "eb":
            expr = value < b(cond, "value")
        case "ge":
            expr = value >= b(cond, "value")
        case "le":
            expr = value <= b(cond, "value")
        case "ap":
            expr = and_(value >= b(cond, "value", ten_percent_under), value <= b(cond, "value", ten_percent_over))
        case _:
            raise AssertionError(cond.prefix)
    if cond.code is not None:
        expr = and_(expr, table.c.code == b(cond, "code"))
    if cond.system is not None:
        expr = and_(expr, table.c.system == b(cond, "system"))
    return expr


def _reference(table: Table, cond: c.ReferenceMatch, b: Binder) -> ColumnElement[bool]:
    if cond.url is not None:
        expr = table.c.url == b(cond, "url")
        if cond.version and cond.version_below:  # the version, or one beneath it at a dot (1 → 1.2, never 10)
            below = table.c.version.like(b(cond, "version", below_version), escape="\\")
            return and_(expr, or_(table.c.version == b(cond, "version"), below))
        return and_(expr, table.c.version == b(cond, "version")) if cond.version else expr
    parts = [table.c.target_id == b(cond, "target_id")]
    if cond.target_type:
        parts.append(table.c.target_type == b(cond, "target_type"))
    return and_(*parts)


def _uri(table: Table, cond: c.UriMatch, b: Binder) -> ColumnElement[bool]:
    if cond.version is not None:
        return _versioned_uri(table, cond, b)
    if cond.mode == "below":
        return table.c.value.like(b(cond, "value", starts), escape="\\")
    if cond.mode == "above":  # the stored URI is a prefix of the value: compared exactly, no LIKE wildcards
        return and_(
            func.length(table.c.value) <= b(cond, "value", length),
            func.substr(b(cond, "value", type_=String()), 1, func.length(table.c.value)) == table.c.value,
        )
    return table.c.value == b(cond, "value")


def _versioned_uri(table: Table, cond: c.UriMatch, b: Binder) -> ColumnElement[bool]:
    """``url|version``: a canonical resource's own ``url`` beside its ``version`` element (indexed as the ``version``
    token of the same resource), or a uri parameter holding a canonical with the version inline (``http://x|1``)."""

    def version_is(column: Any, version: Any, below: Any) -> ColumnElement[bool]:
        if cond.mode != "below":
            return column == version
        return or_(column == version, column.like(below, escape="\\"))

    tokens = INDEX_TABLES["token"].alias()
    versioned = select(literal(1)).where(
        tokens.c.resource_type == table.c.resource_type,
        tokens.c.resource_id == table.c.resource_id,
        tokens.c.param == "version",
        version_is(tokens.c.code, b(cond, "version"), b(cond, "version", below_version)),
    )
    own = and_(table.c.param == "url", table.c.value == b(cond, "value"), versioned.exists())
    # the canonical with its version inline, put together in SQL from the two values
    inline = b(cond, "value", type_=String()) + "|" + b(cond, "version", type_=String())
    inline_below = b(cond, "value", like_escaped) + "|" + b(cond, "version", below_version)
    return or_(own, version_is(table.c.value, inline, inline_below))

"""SQL for search clauses.  Every user value reaches the database as a bound parameter.

A clause constrains a resources-table alias: plain clauses become ``id IN (SELECT resource_id FROM idx_<type>
WHERE param = … AND (OR of values))``; chains and ``_has`` nest the same construction on another type.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, func, literal, not_, or_, select, true
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
from fhir_server.store.tables import INDEX_TABLES, idx_reference, resources


def clause_sql(resource_type: str, clause: AnyClause, rows: Any = resources) -> ColumnElement[bool]:
    """A condition on ``rows`` (the resources table or an alias of it) for one clause."""
    if isinstance(clause, OrClause):
        return or_(*(clause_sql(resource_type, alt, rows) for alt in clause.alternatives))
    if isinstance(clause, AllClause):  # no parts: every resource (an export's "any patient")
        return and_(true(), *(clause_sql(resource_type, part, rows) for part in clause.parts))
    if isinstance(clause, ChainClause):
        target = resources.alias()
        matching_targets = select(target.c.id).where(
            target.c.resource_type == clause.target_type,
            target.c.deleted.is_(False),
            clause_sql(clause.target_type, clause.inner, target),
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
            clause_sql(clause.source_type, clause.inner, source),
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
        return _compartment(resource_type, clause, rows)
    if isinstance(clause, CompositeClause):
        return or_(*(_composite(resource_type, clause, alt, rows) for alt in clause.alternatives))
    return _plain(resource_type, clause, rows)


def _compartment(resource_type: str, clause: CompartmentClause, rows: Any) -> ColumnElement[bool]:
    codes = [p.code for p in clause.params]
    ref = idx_reference.alias()
    member = rows.c.id.in_(
        select(ref.c.resource_id).where(
            ref.c.resource_type == resource_type,
            ref.c.param.in_(codes),
            ref.c.target_type == clause.owner_type,
            ref.c.target_id == clause.owner_id,
        )
    )
    if not clause.exclusive:
        return member
    other = idx_reference.alias()
    # Another owner named by id, or by an absolute URL ending in Owner/{id} (its server cannot be told apart).
    names_another = or_(
        and_(other.c.target_type == clause.owner_type, other.c.target_id != clause.owner_id),
        and_(other.c.target_type.is_(None), other.c.url.like(f"%{clause.owner_type}/%")),
    )
    foreign = select(literal(1)).where(
        other.c.resource_id == rows.c.id,
        other.c.resource_type == resource_type,
        other.c.param.in_(codes),
        names_another,
    )
    return and_(member, not_(foreign.exists()))


def _composite(resource_type: str, clause: CompositeClause, alternative: tuple, rows: Any) -> ColumnElement[bool]:
    """All components match index rows of the same resource and the same element (of one source parameter, for
    a union parameter: an Observation's own code and value, or one component's)."""
    return or_(*(_composite_rows(resource_type, code, alternative, rows) for code in clause.param.row_params))


def _composite_rows(resource_type: str, code: str, alternative: tuple, rows: Any) -> ColumnElement[bool]:
    tables = [INDEX_TABLES[component.type].alias() for component, _ in alternative]
    first = tables[0]
    conditions = []
    for number, (table, (_, condition)) in enumerate(zip(tables, alternative, strict=True)):
        conditions += [
            table.c.resource_type == resource_type,
            table.c.param == f"{code}#{number}",
            _value_sql(table, condition),
        ]
        if number:
            conditions += [table.c.resource_id == first.c.resource_id, table.c.element == first.c.element]
    return rows.c.id.in_(select(first.c.resource_id).where(*conditions))


def _plain(resource_type: str, clause: Clause, rows: Any) -> ColumnElement[bool]:
    param = clause.param
    if param.code == "_id":
        ids = [cond.code for cond in clause.conditions if isinstance(cond, c.TokenMatch)]
        expr = rows.c.id.in_(ids)
    elif param.code == "_lastUpdated":
        expr = or_(*(date_sql(rows.c.last_updated, rows.c.last_updated, cond) for cond in clause.conditions))
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
        matches = or_(*(_value_sql(table, cond) for cond in clause.conditions))
        expr = rows.c.id.in_(select(table.c.resource_id).where(base, matches))
    return not_(expr) if clause.negate else expr


def _param_is(table: Table, param: Any) -> ColumnElement[bool]:
    names = param.row_params
    return table.c.param == names[0] if len(names) == 1 else table.c.param.in_(names)


def _value_sql(table: Table, cond: c.Condition) -> ColumnElement[bool]:
    if isinstance(cond, c.TokenMatch):
        return _token(table, cond)
    if isinstance(cond, c.StringMatch):
        return _string(table, cond)
    if isinstance(cond, c.DateMatch):
        return date_sql(table.c.low, table.c.high, cond)
    if isinstance(cond, c.NumberMatch):
        return _number(table, cond)
    if isinstance(cond, c.ReferenceMatch):
        return _reference(table, cond)
    if isinstance(cond, c.UriMatch):
        return _uri(table, cond)
    raise AssertionError(f"no SQL for {cond!r}")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _token(table: Table, cond: c.TokenMatch) -> ColumnElement[bool]:
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


def _string(table: Table, cond: c.StringMatch) -> ColumnElement[bool]:
    if cond.mode == "exact":
        return table.c.value_exact == cond.value
    pattern = _like_escape(cond.value) + "%"
    if cond.mode == "contains":
        pattern = "%" + pattern
    return table.c.value_norm.like(pattern, escape="\\")


def date_sql(low: Any, high: Any, cond: c.DateMatch) -> ColumnElement[bool]:
    """FHIR R4 §3.1.1.4.2: the resource's range [low, high] against the parameter's range."""
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


def _number(table: Table, cond: c.NumberMatch) -> ColumnElement[bool]:
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


def _reference(table: Table, cond: c.ReferenceMatch) -> ColumnElement[bool]:
    if cond.url is not None:
        expr = table.c.url == cond.url
        if cond.version and cond.version_below:  # the version, or one beneath it at a dot (1 → 1.2, never 10)
            below = table.c.version.like(_like_escape(cond.version) + ".%", escape="\\")
            return and_(expr, or_(table.c.version == cond.version, below))
        return and_(expr, table.c.version == cond.version) if cond.version else expr
    parts = [table.c.target_id == cond.target_id]
    if cond.target_type:
        parts.append(table.c.target_type == cond.target_type)
    return and_(*parts)


def _uri(table: Table, cond: c.UriMatch) -> ColumnElement[bool]:
    if cond.version is not None:
        return _versioned_uri(table, cond)
    if cond.mode == "below":
        return table.c.value.like(_like_escape(cond.value) + "%", escape="\\")
    if cond.mode == "above":  # the stored URI is a prefix of the value: compared exactly, no LIKE wildcards
        return and_(
            func.length(table.c.value) <= len(cond.value),
            func.substr(literal(cond.value), 1, func.length(table.c.value)) == table.c.value,
        )
    return table.c.value == cond.value


def _versioned_uri(table: Table, cond: c.UriMatch) -> ColumnElement[bool]:
    """``url|version``: a canonical resource's own ``url`` beside its ``version`` element (indexed as the ``version``
    token of the same resource), or a uri parameter holding a canonical with the version inline (``http://x|1``)."""

    def version_is(column: Any, version: str) -> ColumnElement[bool]:
        if cond.mode != "below":
            return column == version
        return or_(column == version, column.like(_like_escape(version) + ".%", escape="\\"))

    tokens = INDEX_TABLES["token"].alias()
    versioned = select(literal(1)).where(
        tokens.c.resource_type == table.c.resource_type,
        tokens.c.resource_id == table.c.resource_id,
        tokens.c.param == "version",
        version_is(tokens.c.code, cond.version or ""),
    )
    own = and_(table.c.param == "url", table.c.value == cond.value, versioned.exists())
    return or_(own, version_is(table.c.value, f"{cond.value}|{cond.version}"))

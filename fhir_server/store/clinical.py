"""Prebuilt queries the scoring pipeline runs on every submission: a client's earlier results for one measure,
the client's active Flags and (for age-banded rules) the Patient.  They read the same index rows as search
(parameters ``subject``, ``code``, ``date`` and ``status``), as fixed statements, so the hot path builds no SQL;
``scoring_context`` sends all three as one statement (one round trip instead of three)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, func, literal, literal_column, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from fhir_server.store.fixed import Fixed, FixedSqlite, fetch_together
from fhir_server.store.records import Stored
from fhir_server.store.tables import idx_date, idx_reference, idx_token, resources

_subject = idx_reference.alias("subject")
_code = idx_token.alias("code")
_when = idx_date.alias("effective")
_status = idx_token.alias("status")
_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


class _ProbeOnly(ColumnElement[Any]):
    """A column no index may be chosen for: the statements below must find the client's rows through
    ``(resource_type, resource_id)`` and check the other columns on those few rows.  Without statistics (a fresh
    or growing database) both planners otherwise pick the value index that matches the most equality terms,
    ``idx_token (resource_type, param, code, system)``: every active Flag of every client, re-read once per Flag
    of this client (measured: 1,090 rows per probe at 1,000 clients, 5 ms per submission and growing), and
    SQLite walks every Observation's date to skip the sort.  Rendered ``+column`` on SQLite (its documented way
    to keep a term from an index) and ``(column || '')`` for text on PostgreSQL."""

    inherit_cache = True
    # Part of the cache key, so the statements stay in SQLAlchemy's compiled cache (without it every execution
    # compiled the union again: ~3 ms).
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_ProbeOnly)
def _plain(element: _ProbeOnly, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_ProbeOnly, "postgresql")
def _expression(element: _ProbeOnly, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"({column} || '')" if isinstance(element.type, String) else column


@compiles(_ProbeOnly, "sqlite")
def _unindexed(element: _ProbeOnly, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


def _p(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return _ProbeOnly(column)


def _about(alias, resource_type: str):  # type: ignore[no-untyped-def]
    return and_(alias.c.resource_type == resource_type, alias.c.resource_id == resources.c.id)


def _subjects_rows(resource_type: str, name: str = ""):  # type: ignore[no-untyped-def]
    """The subject's resources of one type, first and on their own: a client has tens of them among millions,
    so every other condition is checked on that small set.  MATERIALIZED keeps PostgreSQL from folding it into
    a join order chosen on missing or stale statistics (seen: 600 ms instead of 1 ms on a fresh database)."""
    return (
        select(_subject.c.resource_id.label("rid"))
        .where(
            _subject.c.resource_type == resource_type,
            _subject.c.param == "subject",
            _subject.c.target_type == bindparam("subject_type"),
            _subject.c.target_id == bindparam("subject_id"),
        )
        .cte(name or f"subject_{resource_type.lower()}")
        .prefix_with("MATERIALIZED", dialect="postgresql")
        # SQLite (3.35+) otherwise walks the date index of every Observation to avoid the sort (measured: the
        # history read grew with the whole table, 6 ms per submission at 8,000 Observations).
        .prefix_with("MATERIALIZED", dialect="sqlite")
    )


def _history(newest_first: bool, limit: str):  # type: ignore[no-untyped-def]
    """The subject's earlier Observations with one code: the newest (``limit``) or the first ones (intake).  Each
    arm has its own subject rows: SQLite, given one materialized set for both, started the second arm from every
    Observation's code instead (measured: 19 ms at 2,000 Observations)."""
    subject = _subjects_rows("Observation", "subject_observation" if newest_first else "subject_observation_first")
    return (
        select(*_COLUMNS)
        .join(subject, subject.c.rid == resources.c.id)
        .join(
            _code,
            and_(
                _about(_code, "Observation"),
                _p(_code.c.param) == "code",
                _p(_code.c.system) == bindparam("system"),
                _p(_code.c.code) == bindparam("code"),
            ),
        )
        .join(_when, and_(_about(_when, "Observation"), _p(_when.c.param) == "date"))
        .where(
            resources.c.resource_type == "Observation",
            resources.c.deleted.is_(False),
            _p(_when.c.low) < bindparam("before"),
        )
        .order_by(_when.c.low.desc() if newest_first else _when.c.low.asc())
        .limit(bindparam(limit))
    )


_HISTORY = _history(True, "limit")
# Rules comparing with intake need the client's first session however long ago it was, not the oldest of the
# newest few: the first rows by date (one per respondent series, for up to ``intake_limit`` series).
_INTAKE = _history(False, "intake_limit")


def _stored(columns: Any) -> Stored:
    return Stored(*columns)


def _stored_sqlite(columns: Any) -> Stored:
    """A row read on SQLite's driver: datetimes as SQLAlchemy stored them (text), booleans as 0/1."""
    resource_type, resource_id, version_id, last_updated, deleted, content = columns
    return Stored(resource_type, resource_id, version_id, datetime.fromisoformat(last_updated), bool(deleted), content)


def _rows(rows, read=_stored) -> list[Stored]:  # type: ignore[no-untyped-def]
    seen, out = set(), []
    for row in rows:
        stored = read(row)
        if stored.id not in seen:
            seen.add(stored.id)
            out.append(stored)
    return out


_BY_TOKEN = (
    select(*_COLUMNS)
    .join(
        _code,
        and_(
            _code.c.resource_type == bindparam("rtype"),
            _code.c.resource_id == resources.c.id,
            _code.c.param == bindparam("param"),
            _code.c.system == bindparam("system"),
            _code.c.code == bindparam("code"),
        ),
    )
    # The type from the token row, not the parameter: the plan is kept (fixed.py), and with the parameter on
    # both sides a plan made without its value may start from every resource of the type (seen: 200 ms).
    .where(resources.c.resource_type == _code.c.resource_type, resources.c.deleted.is_(False))
    .limit(bindparam("limit"))
)


_PG_BY_TOKEN = Fixed(_BY_TOKEN, keep_plan=True)
_LITE_BY_TOKEN = FixedSqlite(_BY_TOKEN)


def _token_params(resource_type: str, param: str, system: str, code: str, limit: int) -> dict[str, Any]:
    return {"rtype": resource_type, "param": param, "system": system, "code": code, "limit": limit}


def find_by_token(conn: Connection, resource_type: str, param: str, system: str, code: str, limit: int) -> list[Stored]:
    """Current resources whose token parameter has system|code (conditional create by identifier)."""
    params = _token_params(resource_type, param, system, code, limit)
    if conn.dialect.name == "postgresql":
        return _rows(_PG_BY_TOKEN.fetch(conn, params))
    return _rows(_LITE_BY_TOKEN.fetch(conn, params), _stored_sqlite)


# -- everything the scoring pipeline reads, in one statement ------------------------------------------------
_PATIENT = select(*_COLUMNS).where(
    resources.c.resource_type == "Patient", resources.c.id == bindparam("patient_id"), resources.c.deleted.is_(False)
)
_FLAG_SUBJECT = _subjects_rows("Flag")
_flag_code = idx_token.alias("flag_code")


def _active_flags(code_term):  # type: ignore[no-untyped-def]
    return (
        select(*_COLUMNS)
        .join(_FLAG_SUBJECT, _FLAG_SUBJECT.c.rid == resources.c.id)
        .join(_status, and_(_about(_status, "Flag"), _p(_status.c.param) == "status", _p(_status.c.code) == "active"))
        .join(
            _flag_code,
            and_(
                _about(_flag_code, "Flag"),
                _p(_flag_code.c.param) == "code",
                _p(_flag_code.c.system) == bindparam("flag_system"),
                code_term,
            ),
        )
        .where(resources.c.resource_type == "Flag", resources.c.deleted.is_(False))
    )


def _tagged(kind: str, statement, order=None):  # type: ignore[no-untyped-def]
    """One arm of the union: ``statement``'s rows marked with ``kind`` and a sort key (a union keeps no order),
    as a subquery so the arm keeps its own ORDER BY and LIMIT."""
    key = (order if order is not None else literal(None, _when.c.low.type)).label("sort_key")
    inner = statement.add_columns(literal(kind).label("kind"), key).subquery(f"{kind}_rows")
    return select(inner.c.kind, inner.c.sort_key, *(inner.c[c.name] for c in _COLUMNS))


# Run on the driver (fixed.py), so the statement text must not vary with the number of Flag codes: PostgreSQL
# takes them as one array parameter, SQLite as one JSON array.
_LITE_CODES = select(literal_column("value")).select_from(func.json_each(bindparam("codes_json"))).scalar_subquery()
_FLAG_ARM = {
    "sqlite": _tagged("flag", _active_flags(_p(_flag_code.c.code).in_(_LITE_CODES))),
    "postgresql": _tagged("flag", _active_flags(_p(_flag_code.c.code) == any_(bindparam("codes")))),
}


def _context(dialect: str, intake: bool, patient: bool):  # type: ignore[no-untyped-def]
    """The statement for what a rule set needs: the intake arm only for rules measured from intake (an arm
    costs PostgreSQL planning time on every submission), the Patient only for age-banded rules."""
    arms = [_tagged("history", _HISTORY, _when.c.low), _FLAG_ARM[dialect]]
    arms += [_tagged("intake", _INTAKE, _when.c.low)] if intake else []
    arms += [_tagged("patient", _PATIENT)] if patient else []
    statement = union_all(*arms)
    return Fixed(statement, keep_plan=True) if dialect == "postgresql" else FixedSqlite(statement)


_CONTEXTS = {
    (dialect, intake, patient): _context(dialect, intake, patient)
    for dialect in ("postgresql", "sqlite")
    for intake in (False, True)
    for patient in (False, True)
}


@dataclass(frozen=True, slots=True)
class ScoringContext:
    history: list[Stored]  # newest first: the newest ``limit`` and the first ``intake_limit`` sessions
    active_flags: list[Stored]
    patient: Stored | None


ScoringRead = tuple[
    tuple[str, str], tuple[str, str, datetime, int, int] | None, tuple[str, list[str]] | None, str | None
]
"""What ``scoring_context`` is asked: (subject, measure, flags, patient_id)."""


def scoring_context(
    conn: Connection,
    subject: tuple[str, str],
    measure: tuple[str, str, datetime, int, int] | None,
    flags: tuple[str, list[str]] | None,
    patient_id: str | None,
) -> ScoringContext:
    """The subject's earlier results (``measure`` = system, code, effective before, how many of the newest, how
    many of the first), its active Flags with one of these codes (``flags`` = system, codes) and, when
    ``patient_id`` is given, that Patient."""
    statement, params = _context_statement(conn.dialect.name, (subject, measure, flags, patient_id))
    return _context_from(conn.dialect.name, statement.fetch(conn, params))


def find_by_token_with_context(
    conn: Connection, token: tuple[str, str, str, str], limit: int, read: ScoringRead
) -> tuple[list[Stored], ScoringContext]:
    """``find_by_token`` and ``scoring_context`` together, in one round trip on PostgreSQL: a submission's replay
    check and what its scoring reads, asked before it is stored (nothing it writes is read by either)."""
    dialect = conn.dialect.name
    statement, params = _context_statement(dialect, read)
    if dialect == "postgresql":
        found, rows = fetch_together(conn, [(_PG_BY_TOKEN, _token_params(*token, limit)), (statement, params)])
        return _rows(found), _context_from(dialect, rows)
    return find_by_token(conn, *token, limit), _context_from(dialect, statement.fetch(conn, params))


def _context_statement(dialect: str, read: ScoringRead) -> tuple[Fixed | FixedSqlite, dict[str, Any]]:
    subject, measure, flags, patient_id = read
    system, code, before, limit, intake_limit = measure or ("", "", datetime(1, 1, 1), 0, 0)
    flag_system, codes = flags or ("", [])
    params = {
        "subject_type": subject[0],
        "subject_id": subject[1],
        "system": system,
        "code": code,
        "before": before,
        "limit": limit,
        "intake_limit": intake_limit,
        "flag_system": flag_system,
        "codes": codes or [""],
        "patient_id": patient_id,
    }
    if dialect == "sqlite":
        params["codes_json"] = json.dumps(params.pop("codes"))
    return _CONTEXTS[(dialect, intake_limit > 0, patient_id is not None)], params


def _context_from(dialect: str, rows: Any) -> ScoringContext:
    read = _stored if dialect == "postgresql" else _stored_sqlite
    found: dict[str, dict[str, tuple]] = {"history": {}, "flag": {}, "patient": {}}
    for kind, sort_key, *columns in rows:
        stored = read(columns)
        # Joins can repeat a resource; an intake row may also be one of the newest.
        found["history" if kind == "intake" else kind].setdefault(stored.id, (sort_key, stored))
    history = sorted(found["history"].values(), key=lambda pair: pair[0], reverse=True)
    return ScoringContext(
        [stored for _, stored in history],
        [stored for _, stored in found["flag"].values()],
        next((stored for _, stored in found["patient"].values()), None),
    )

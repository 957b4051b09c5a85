"""Prebuilt queries the scoring pipeline runs on every submission: a rater series' earlier results for one
measure, the client's active Flags and (when age matters) the Patient, read from the clinical series index
(``idx_series``, scoring/series_index.py) as fixed statements, so the hot path builds no SQL.  Each arm is one
range of that index, so none grows with the client's history; ``scoring_context`` sends them all as one
statement (one round trip).  ``find_by_token`` is the replay check's look-up by identifier.

The reads and their types are scoring's (scoring/history.py: ``ClinicalHistory``); this module is their SQL, which
``WriteSession.scoring_context`` runs in the write transaction."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, func, literal, literal_column, select, union_all
from sqlalchemy.engine import Connection

from fhir_server.scoring.history import ActiveFlags, Measure, ScoringContext, ScoringRead
from fhir_server.scoring.series_index import series_key
from fhir_server.store.fixed import Fixed, FixedSqlite, fetch_together
from fhir_server.store.records import Stored
from fhir_server.store.tables import idx_reference, idx_series, idx_token, resources

_code = idx_token.alias("code")
_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


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


_enc = idx_reference.alias("enc")
_BY_ENCOUNTER = (
    select(*_COLUMNS)
    .select_from(
        _enc.join(
            resources, and_(resources.c.resource_type == _enc.c.resource_type, resources.c.id == _enc.c.resource_id)
        )
    )
    .where(
        _enc.c.resource_type == "Observation",
        _enc.c.param == "encounter",
        _enc.c.target_type == "Encounter",
        _enc.c.target_id == bindparam("encounter_id"),
        resources.c.deleted.is_(False),
    )
)
_PG_BY_ENCOUNTER = Fixed(_BY_ENCOUNTER)
_PG_LOCK = Fixed(select(func.pg_advisory_xact_lock(func.hashtext(bindparam("key", type_=String)))))


def encounter_results(conn: Connection, encounter_id: str, lock: str | None = None) -> list[Stored]:
    """The current Observations filed under ``Encounter/{encounter_id}`` (the few of one session: the client's and
    the clinician's ratings that scoring/concordance.py pairs), by the reference index.  ``lock``: on PostgreSQL,
    first wait for any other transaction holding that advisory key, in the same round trip (a pipeline: the read
    starts, and takes its snapshot, once the lock is held, so it sees what the holder committed); SQLite has one
    writer at a time already."""
    params = {"encounter_id": encounter_id}
    if conn.dialect.name != "postgresql":
        return _rows(conn.execute(_BY_ENCOUNTER, params))
    if lock is None:
        return _rows(_PG_BY_ENCOUNTER.fetch(conn, params))
    _, rows = fetch_together(conn, [(_PG_LOCK, {"key": lock}), (_PG_BY_ENCOUNTER, params)])
    return _rows(rows)


# -- everything the scoring pipeline reads, in one statement ------------------------------------------------
_PATIENT = select(*_COLUMNS).where(
    resources.c.resource_type == "Patient", resources.c.id == bindparam("patient_id"), resources.c.deleted.is_(False)
)


def _series_rows(resource_type: str, param: str, name: str, series: str):  # type: ignore[no-untyped-def]
    """The current resources behind one range of the series index: the subject's rows of one type and kind."""
    rows = idx_series.alias(name)
    return rows, (
        select(*_COLUMNS)
        .select_from(
            rows.join(
                resources,
                and_(resources.c.resource_type == rows.c.resource_type, resources.c.id == rows.c.resource_id),
            )
        )
        .where(
            rows.c.resource_type == resource_type,
            rows.c.param == param,
            rows.c.subject_id == bindparam("subject_id"),
            rows.c.subject_type == bindparam("subject_type"),
            rows.c.series == bindparam(series),
            resources.c.deleted.is_(False),
        )
    )


def _history(newest_first: bool, limit: str):  # type: ignore[no-untyped-def]
    """The series' results with one code before ``before``: the newest ``limit``, or the first (intake)."""
    rows, statement = _series_rows("Observation", "measure", "newest" if newest_first else "first", "series")
    statement = statement.where(
        rows.c.code == bindparam("code"), rows.c.system == bindparam("system"), rows.c.at < bindparam("before")
    )
    return statement.order_by(rows.c.at.desc() if newest_first else rows.c.at.asc()).limit(bindparam(limit)), rows


_HISTORY, _HISTORY_ROWS = _history(True, "limit")
_INTAKE, _INTAKE_ROWS = _history(False, "intake_limit")


def _active_flags(code_term):  # type: ignore[no-untyped-def]
    rows, statement = _series_rows("Flag", "active-flag", "active", "flag_series")
    return statement.where(rows.c.system == bindparam("flag_system"), code_term(rows.c.code))


def _tagged(kind: str, statement, order=None):  # type: ignore[no-untyped-def]
    """One arm of the union: ``statement``'s rows marked with ``kind`` and a sort key (a union keeps no order),
    as a subquery so the arm keeps its own ORDER BY and LIMIT."""
    key = (order if order is not None else literal(None, idx_series.c.at.type)).label("sort_key")
    inner = statement.add_columns(literal(kind).label("kind"), key).subquery(f"{kind}_rows")
    return select(inner.c.kind, inner.c.sort_key, *(inner.c[c.name] for c in _COLUMNS))


# Run on the driver (fixed.py), so the statement text must not vary with the number of Flag codes: PostgreSQL
# takes them as one array parameter, SQLite as one JSON array.
_LITE_CODES = select(literal_column("value")).select_from(func.json_each(bindparam("codes_json"))).scalar_subquery()
_FLAG_ARM = {
    "sqlite": _tagged("flag", _active_flags(lambda code: code.in_(_LITE_CODES))),
    "postgresql": _tagged("flag", _active_flags(lambda code: code == any_(bindparam("codes")))),
}


def _context(dialect: str, intake: bool, patient: bool):  # type: ignore[no-untyped-def]
    """The statement for what a rule set needs: the intake arm only for rules measured from intake (an arm
    costs PostgreSQL planning time on every submission), the Patient only for age-banded rules."""
    arms = [_tagged("history", _HISTORY, _HISTORY_ROWS.c.at), _FLAG_ARM[dialect]]
    arms += [_tagged("intake", _INTAKE, _INTAKE_ROWS.c.at)] if intake else []
    arms += [_tagged("patient", _PATIENT)] if patient else []
    statement = union_all(*arms)
    return Fixed(statement, keep_plan=True) if dialect == "postgresql" else FixedSqlite(statement)


_CONTEXTS = {
    (dialect, intake, patient): _context(dialect, intake, patient)
    for dialect in ("postgresql", "sqlite")
    for intake in (False, True)
    for patient in (False, True)
}


# The types the scoring read reads: a write of one of them in the transaction must be sent before it is read.
READ_TYPES = ("Observation", "Flag", "Patient")


def scoring_context(
    conn: Connection,
    subject: tuple[str, str],
    measure: Measure | None,
    flags: ActiveFlags | None,
    patient_id: str | None,
) -> ScoringContext:
    """One rater series' earlier results of a measure (the newest few and the first), its active Flags with one
    of these codes and, when ``patient_id`` is given, that Patient."""
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
    system, code, series, before, limit, intake = measure or ("", "", "", datetime(1, 1, 1), 0, False)
    flag_system, codes, flag_series = flags or ("", [], "")
    intake_limit = 1 if intake else 0
    params = {
        "subject_type": subject[0],
        "subject_id": subject[1],
        "system": system,
        "code": code,
        "series": series_key(series),
        "flag_series": series_key(flag_series),
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

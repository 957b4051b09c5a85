"""Prebuilt queries the scoring pipeline runs on every submission: a client's earlier results for one measure,
and a client's active Flags.  They read the same index rows as search (parameters ``subject``, ``code``, ``date``
and ``status``), as fixed statements, so the hot path builds no SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, select
from sqlalchemy.engine import Connection

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


def _about(alias, resource_type: str):  # type: ignore[no-untyped-def]
    return and_(alias.c.resource_type == resource_type, alias.c.resource_id == resources.c.id)


def _subjects_rows(resource_type: str):  # type: ignore[no-untyped-def]
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
        .cte(f"subject_{resource_type.lower()}")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


_HISTORY_SUBJECT = _subjects_rows("Observation")
_HISTORY = (
    select(*_COLUMNS)
    .join(_HISTORY_SUBJECT, _HISTORY_SUBJECT.c.rid == resources.c.id)
    .join(
        _code,
        and_(
            _about(_code, "Observation"),
            _code.c.param == "code",
            _code.c.system == bindparam("system"),
            _code.c.code == bindparam("code"),
        ),
    )
    .join(_when, and_(_about(_when, "Observation"), _when.c.param == "date"))
    .where(
        resources.c.resource_type == "Observation", resources.c.deleted.is_(False), _when.c.low < bindparam("before")
    )
    .order_by(_when.c.low.desc())
    .limit(bindparam("limit"))
)

_FLAG_SUBJECT = _subjects_rows("Flag")
_ACTIVE_FLAGS = (
    select(*_COLUMNS)
    .join(_FLAG_SUBJECT, _FLAG_SUBJECT.c.rid == resources.c.id)
    .join(_status, and_(_about(_status, "Flag"), _status.c.param == "status", _status.c.code == "active"))
    .join(
        _code,
        and_(
            _about(_code, "Flag"),
            _code.c.param == "code",
            _code.c.system == bindparam("system"),
            _code.c.code.in_(bindparam("codes", expanding=True)),
        ),
    )
    .where(resources.c.resource_type == "Flag", resources.c.deleted.is_(False))
)


def _rows(conn: Connection, statement, params) -> list[Stored]:  # type: ignore[no-untyped-def]
    seen, out = set(), []
    for row in conn.execute(statement, params):
        if row.id not in seen:
            seen.add(row.id)
            out.append(Stored(row.resource_type, row.id, row.version_id, row.last_updated, row.deleted, row.content))
    return out


def scored_history(
    conn: Connection, subject: tuple[str, str], system: str, code: str, before: datetime, limit: int
) -> list[Stored]:
    """Observations with this code for this subject, effective before ``before``, newest first."""
    return _rows(
        conn,
        _HISTORY,
        {
            "subject_type": subject[0],
            "subject_id": subject[1],
            "system": system,
            "code": code,
            "before": before,
            "limit": limit,
        },
    )


def active_flags(conn: Connection, subject: tuple[str, str], system: str, codes: list[str]) -> list[Stored]:
    """The subject's active Flags with one of these codes."""
    if not codes:
        return []
    return _rows(
        conn, _ACTIVE_FLAGS, {"subject_type": subject[0], "subject_id": subject[1], "system": system, "codes": codes}
    )


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
    .where(resources.c.resource_type == bindparam("rtype"), resources.c.deleted.is_(False))
    .limit(bindparam("limit"))
)


def find_by_token(conn: Connection, resource_type: str, param: str, system: str, code: str, limit: int) -> list[Stored]:
    """Current resources whose token parameter has system|code (conditional create by identifier)."""
    return _rows(
        conn, _BY_TOKEN, {"rtype": resource_type, "param": param, "system": system, "code": code, "limit": limit}
    )

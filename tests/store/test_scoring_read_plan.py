"""The scoring read (store/clinical.py: a rater series' newest sessions, its first and the active Flags, in one
statement) returns the newest and the first session, and on SQLite reads every arm as one range of the series
index (subject, code, series, time) and the resources by id, whatever the table sizes or the client's history:
a plan that starts from every Observation's code, or from all of the client's rows, grows with the table or with
the history (it cost 19 ms per submission at 2,000 Observations)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import psycopg

from fhir_server.store import clinical
from fhir_server.store.fixed import sqlite_value
from tests.scoring.test_pipeline import srs, submit

MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"
FLAGS = "http://fit-fhir.org/fhir/CodeSystem/fit-flags"


def _params(uid: str) -> dict:
    return {
        "subject_type": "Patient",
        "subject_id": uid,
        "system": MEASURES,
        "code": "srs-total",
        "series": "self",
        "flag_series": "self",
        "before": datetime(2030, 1, 1),
        "limit": 4,
        "intake_limit": 1,
        "flag_system": FLAGS,
        "patient_id": None,
    }


def _fill(client, uid: str) -> None:
    for week in range(6):  # this client and two others, so the tables hold rows that are not this client's
        for who in (uid, f"{uid}-b", f"{uid}-c"):
            submit(client, srs(who, (80, 70 + week, 90, 85), f"2026-03-{week + 1:02d}T10:00:00Z"))


def test_every_arm_starts_from_the_clients_rows(client, uid, database_url, backend):
    for week in range(6):  # this client and two others, so the tables hold rows that are not this client's
        for who in (uid, f"{uid}-b", f"{uid}-c"):
            submit(client, srs(who, (80, 70 + week, 90, 85), f"2026-03-{week + 1:02d}T10:00:00Z"))
    kinds = _sqlite_plan(uid, database_url) if backend == "sqlite" else _postgresql_plan(uid, database_url)
    assert kinds.count("history") == 4 and kinds.count("intake") == 1  # the newest four, the first


def _sqlite_plan(uid: str, database_url: str) -> list[str]:
    statement = clinical._CONTEXTS[("sqlite", True, False)]
    params = {**statement.defaults, **_params(uid), "codes_json": '["srs-below-cutoff", "srs-drop"]'}
    positional = [sqlite_value(params[name]) for name in statement.order]
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement.sql, positional)]
        kinds = [row[0] for row in db.execute(statement.sql, positional)]
    tables = []
    for step in plan:
        table = step.split()[1] if step.startswith(("SEARCH", "SCAN")) else ""
        tables.append(table)
        assert not step.startswith("SCAN") or table.endswith("_rows") or table == "json_each", plan  # no table whole
        if table == "resources":
            assert "id=?" in step, plan  # by (resource_type, id)
        if table in ("newest", "first", "active"):
            assert "ix_idx_series_value" in step and "series=?" in step, plan  # one range of the series index
    assert {"newest", "first", "active"} <= set(tables), plan
    return kinds


def _postgresql_plan(uid: str, database_url: str) -> list[str]:
    """PostgreSQL's plan depends on its statistics (on a test database's small tables a sequential scan is the
    right plan), so here only the answer is checked; the shape is held by the ``|| ''`` terms (clinical.py) and
    measured at scale by bench/scoring.py."""
    params = {
        **clinical._CONTEXTS[("postgresql", True, False)].defaults,
        **_params(uid),
        "codes": ["srs-below-cutoff", "srs-drop"],
    }
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return [row[0] for row in conn.execute(clinical._CONTEXTS[("postgresql", True, False)].sql, params)]

"""PostgreSQL keeps the plans of the hot path's fixed statements (store/fixed.py: the scoring read and the replay
check), but only once ANALYZE has seen the tables: a plan made on an empty database is a guess ("one row
everywhere") that stays while the tables grow.  The planner settings for a kept plan never outlive the statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from fhir_server.config import Settings
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import default_registry
from fhir_server.store import clinical, fixed
from fhir_server.store.engine import POSTGRES_CONNECT_ARGS, build_engine, normalise_url
from fhir_server.store.repository import Repository
from tests.scoring.test_pipeline import srs, submit
from tests.store.test_scoring_read_plan import FLAGS, MEASURES
from tests.store.test_scoring_read_plan import _params as scoring_read_params
from tests.support.databases import POSTGRES_ENV, postgres_admin_url, postgres_database
from tests.support.server import ServerThread

pytestmark = pytest.mark.skipif(postgres_admin_url() is None, reason=f"PostgreSQL half skipped: {POSTGRES_ENV} unset")

SUBJECT = ("Patient", "kept-plan-client")
MEASURE = (MEASURES, "srs-total", "self", datetime(2030, 1, 1), 6, True)
FLAG_CODES = (FLAGS, ["srs-below-cutoff", "srs-drop", "srs-item-checkin"], "self")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of its own holding one client's six sessions (stored and scored by the server)."""
    with postgres_database(postgres_admin_url() or "") as url:
        settings = Settings(database_url=url, _env_file=None)
        with ServerThread(settings, "postgresql") as running, httpx.Client(base_url=running.fhir_base) as client:
            for week in range(6):
                submit(client, srs(SUBJECT[1], (80, 70 + week, 90, 85), f"2026-03-{week + 1:02d}T10:00:00Z"))
        yield url


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    """One connection, so its prepared statements can be looked at; the statistics are asked afresh."""
    fixed._settled.clear()
    made = create_engine(normalise_url(database), connect_args=POSTGRES_CONNECT_ARGS, pool_size=1, max_overflow=0)
    yield made
    made.dispose()
    fixed._settled.clear()


def _read(engine: Engine, together: bool = False) -> tuple[clinical.ScoringContext, dict[str, str], list[tuple]]:
    """The scoring read and the replay check in one transaction; the planner settings seen right after them,
    and this connection's prepared statements (generic and custom plans made so far)."""
    with engine.begin() as conn:
        token = ("QuestionnaireResponse", "identifier", "urn:none", "none")
        if together:  # as a submission asks them: the replay check with the scoring read, one round trip
            found, context = clinical.find_by_token_with_context(conn, token, 2, (SUBJECT, MEASURE, FLAG_CODES, None))
        else:
            context = clinical.scoring_context(conn, SUBJECT, MEASURE, FLAG_CODES, None)
            found = clinical.find_by_token(conn, *token, 2)
        assert found == []
        driver = conn.connection.driver_connection
        settings = {name: driver.execute(f"SELECT current_setting('{name}')").fetchone()[0] for name in fixed._PLANNED}
        prepared = driver.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        ).fetchall()
    return context, settings, prepared


def _plans_of(prepared: list[tuple], marker: str) -> tuple[int, int]:
    return next(((g, c) for statement, g, c in prepared if marker in statement), (0, 0))


def _fill_and_analyze(url: str) -> None:
    """Other clients' Observations (1,200, with their subject, code and date rows), then ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM resources WHERE id = 'other-1'").fetchone():
            return  # filled by an earlier test on this module's database
        conn.execute(
            "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content) "
            "SELECT 'Observation', 'other-' || n, 1, now(), false, '{}' FROM generate_series(1, 1200) AS n"
        )
        conn.execute(
            "INSERT INTO idx_reference (resource_type, resource_id, param, target_type, target_id) "
            "SELECT 'Observation', 'other-' || n, 'subject', 'Patient', 'other-client-' || (n % 100) "
            "FROM generate_series(1, 1200) AS n"
        )
        conn.execute(
            "INSERT INTO idx_token (resource_type, resource_id, param, system, code) "
            "SELECT 'Observation', 'other-' || n, 'code', %s, 'srs-total' FROM generate_series(1, 1200) AS n",
            (MEASURES,),
        )
        conn.execute(
            "INSERT INTO idx_date (resource_type, resource_id, param, low, high) "
            "SELECT 'Observation', 'other-' || n, 'date', now(), now() FROM generate_series(1, 1200) AS n"
        )
        conn.execute(
            "INSERT INTO idx_series (resource_type, resource_id, param, subject_type, subject_id, system, code, series,"
            " at) SELECT 'Observation', 'other-' || n, 'measure', 'Patient', 'other-client-' || (n %% 100), %s,"
            " 'srs-total', 'self', now() FROM generate_series(1, 1200) AS n",
            (MEASURES,),
        )
        conn.execute("ANALYZE")


def test_plans_are_planned_for_their_values_until_the_tables_have_statistics_then_kept(engine, database):
    for _ in range(8):  # beyond psycopg's threshold for preparing a statement by itself (5)
        before, settings, prepared = _read(engine)
    assert len(before.history) == 6 and before.active_flags
    assert _plans_of(prepared, "idx_series AS newest")[0] == 0, "a plan was kept on an empty database"
    assert _plans_of(prepared, "idx_token AS code")[0] == 0

    _fill_and_analyze(database)
    fixed._settled.clear()  # as if the five seconds between two looks had passed
    for _ in range(3):
        after, settings, prepared = _read(engine)
    generic, _custom = _plans_of(prepared, "idx_series AS newest")
    assert generic >= 3, prepared  # the scoring read ran on its kept plan each time
    assert _plans_of(prepared, "idx_token AS code")[0] >= 3  # and so did the replay check
    # The same answer from the kept plan, and the connection's own settings right after it.
    assert [s.id for s in after.history] == [s.id for s in before.history]
    assert sorted(s.id for s in after.active_flags) == sorted(s.id for s in before.active_flags)
    assert settings == {
        "plan_cache_mode": "force_custom_plan",
        "enable_seqscan": "on",
        "enable_bitmapscan": "on",
        "enable_hashjoin": "on",
        "enable_mergejoin": "on",
    }


def test_the_replay_check_and_the_scoring_read_asked_together_run_on_kept_plans(engine, database):
    """A submission sends its replay check with its scoring read (one pipeline, the planner settings set and
    restored once around both): the same answers as asked one by one, both on kept plans."""
    _fill_and_analyze(database)
    fixed._settled.clear()
    alone, _settings, _prepared = _read(engine)
    for _ in range(3):
        together, settings, prepared = _read(engine, together=True)
    assert _plans_of(prepared, "idx_series AS newest")[0] >= 3, prepared
    assert _plans_of(prepared, "idx_token AS code")[0] >= 3
    assert [s.id for s in together.history] == [s.id for s in alone.history] and len(alone.history) == 6
    assert sorted(s.id for s in together.active_flags) == sorted(s.id for s in alone.active_flags)
    assert set(settings.values()) == {"force_custom_plan", "on"}


_TYPES = {
    "before": "timestamp",
    "param_4": "timestamp",  # the sort key of the arms with none (a NULL timestamp)
    "limit": "int",
    "intake_limit": "int",
    "codes": "text[]",
}


def test_a_kept_plan_starts_from_the_clients_rows(database):
    """The plan made without the client's values (a generic plan, under the settings a kept plan is made with)
    reads each arm as one range of the series index and the resources by id: no table is read whole.
    This holds the statement's shape; at these sizes the planner would not pick a whole-table plan even without
    the settings, which are there for statistics that mislead it."""
    _fill_and_analyze(database)
    statement = clinical._CONTEXTS[("postgresql", True, False)]
    names: list[str] = []

    def numbered(match: re.Match) -> str:
        names.append(match.group(1)) if match.group(1) not in names else None
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", numbered, statement.sql)
    with psycopg.connect(database) as conn:
        conn.execute(fixed.KEEP_PLAN)  # the settings a kept plan is made with, generic plans among them
        conn.execute(f"PREPARE kept({', '.join(_TYPES.get(n, 'text') for n in names)}) AS {prepared}")
        values = {**statement.defaults, **scoring_read_params(SUBJECT[1]), "codes": FLAG_CODES[1]}
        arguments = ", ".join(["%s"] * len(names))
        cursor = psycopg.ClientCursor(conn)
        plan = cursor.execute(f"EXPLAIN EXECUTE kept({arguments})", [values[n] for n in names]).fetchall()
    text = "\n".join(row[0] for row in plan)
    assert "Seq Scan" not in text and "Hash Join" not in text and "Merge Join" not in text, text
    assert text.count("ix_idx_series_value") >= 3, text  # newest, first and active Flags: each one index range


def test_the_planner_settings_of_the_writes_never_outlive_them(database):
    """The flush sends its writes on kept plans (store/batch.py) and restores the connection's settings in the
    same round trip: whatever the transaction runs after a flush is planned as before."""
    fixed._settled.clear()
    engine = build_engine(Settings(database_url=database, _env_file=None))
    repo = Repository(engine, SearchIndexer(default_registry()), write_retries=1)
    seen: list[dict[str, str]] = []

    def work(session):
        session.create({"resourceType": "Basic", "code": {"text": "kept"}}, "kept-plan-basic")
        session.flush()
        driver = session.conn.connection.driver_connection
        seen.append({name: driver.execute(f"SHOW {name}").fetchone()[0] for name in fixed._PLANNED})

    try:
        repo.write(work)
    finally:
        engine.dispose()
    assert seen == [
        {
            "plan_cache_mode": "force_custom_plan",
            "enable_seqscan": "on",
            "enable_bitmapscan": "on",
            "enable_hashjoin": "on",
            "enable_mergejoin": "on",
        }
    ]
    assert repo.read("Basic", "kept-plan-basic").version_id == 1


def test_after_the_last_flush_the_commit_ends_the_planner_settings(database):
    """The flush before the commit sends no statement to restore the settings (the commit ends SET LOCAL): the
    next transaction on the same connection is planned with the connection's own settings."""
    fixed._settled.clear()
    engine = create_engine(normalise_url(database), connect_args=POSTGRES_CONNECT_ARGS, pool_size=1, max_overflow=0)
    repo = Repository(engine, SearchIndexer(default_registry()), write_retries=1)

    def settings_now(session):
        driver = session.conn.connection.driver_connection
        return {name: driver.execute(f"SHOW {name}").fetchone()[0] for name in fixed._PLANNED}

    try:
        repo.write(lambda s: s.create({"resourceType": "Basic", "code": {"text": "last"}}, "last-flush-basic"))
        seen = repo.write(settings_now)
    finally:
        engine.dispose()
    assert set(seen.values()) == {"force_custom_plan", "on"}, seen
    assert repo.read("Basic", "last-flush-basic").version_id == 1


def test_outside_a_transaction_the_statements_are_planned_as_usual(database):
    """SET LOCAL does nothing without a transaction, so an autocommit connection must not take the kept path
    (its plan would be made under the connection's own settings, whatever they are)."""
    _fill_and_analyze(database)
    fixed._settled.clear()
    engine = create_engine(normalise_url(database), isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            for _ in range(8):
                context = clinical.scoring_context(conn, SUBJECT, MEASURE, FLAG_CODES, None)
            prepared = conn.connection.driver_connection.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            ).fetchall()
    finally:
        engine.dispose()
    assert len(context.history) == 6 and context.active_flags
    assert not any("idx_series AS newest" in statement and generic for statement, generic, _ in prepared), prepared

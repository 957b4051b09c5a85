"""The clinical series index (idx_series) follows every write the way the search index does, and the migration
that adds it fills it from what is already stored: history-aware rules see the same earlier sessions whether a
result was scored before or after the upgrade, and a deleted or retracted result, or a closed Flag, drops out."""

from __future__ import annotations

import httpx
from alembic import command
from sqlalchemy import create_engine, select, text

from fhir_server.config import Settings
from fhir_server.store.migrate import alembic_config
from fhir_server.store.tables import idx_series
from tests.api.fhir import put
from tests.scoring.test_clinical_sequences import by_code
from tests.scoring.test_pipeline import srs, submit
from tests.store.secrets_support import fresh_database
from tests.support.server import ServerThread


def _rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            c = idx_series.c
            columns = (c.resource_type, c.resource_id, c.param, c.subject_id, c.code, c.series, c.at)
            return sorted(tuple(row) for row in conn.execute(select(*columns)))
    finally:
        engine.dispose()


# Every date the index tables keep, as stored: SQLite compares them as text, so an upgrade must write the text the
# server writes (a whole second as "10:00:00.000000", not "10:00:00").
STORED_DATES = {"idx_series": ("at",), "idx_report": ("at", "acknowledged_at"), "idx_combo": ("sort_at",)}


def _date_texts(url: str) -> dict[str, list]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                f"{table}.{column}": sorted(
                    row[0] or "" for row in conn.execute(text(f"SELECT CAST({column} AS TEXT) FROM {table}"))
                )
                for table, columns in STORED_DATES.items()
                for column in columns
            }
    finally:
        engine.dispose()


def test_the_migration_fills_the_index_from_stored_results(backend):
    with fresh_database(backend) as url:
        settings = Settings(database_url=url, load_library=True, _env_file=None)
        with ServerThread(settings, backend) as running, httpx.Client(base_url=running.fhir_base) as client:
            for day, marks in enumerate(((95,) * 4, (85,) * 4, (80,) * 4), start=1):
                submit(client, srs("migrated", marks, f"2026-02-{day:02d}T10:00:00Z"))
        before, texts = _rows(url), _date_texts(url)
        assert {r[2] for r in before} == {"measure", "active-flag"} and len(before) >= 5
        assert texts["idx_series.at"] and texts["idx_report.at"] and texts["idx_combo.sort_at"]
        command.downgrade(alembic_config(url), "0012")  # as a database from before the indexes were added
        command.upgrade(alembic_config(url), "head")
        assert _rows(url) == before
        assert _date_texts(url) == texts  # the series, report and combination indexes' dates, as the server wrote


def test_the_upgrade_mends_whole_second_dates_an_earlier_upgrade_wrote_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/mend.db"
    command.upgrade(alembic_config(url), "0020")
    engine = create_engine(url)
    row = {"resource_type": "Observation", "resource_id": "o", "param": "p", "element": None}
    with engine.begin() as conn:  # as the untyped inserts of 0013, 0017 and 0019 stored them
        conn.execute(text(
            "INSERT INTO idx_series (resource_type, resource_id, param, element, subject_type, subject_id, system,"
            " code, series, at) VALUES (:resource_type, :resource_id, :param, :element, 'Patient', 'p', 's', 'c',"
            " 'self', '2026-02-01 10:00:00')"), row)  # fmt: skip
        conn.execute(text(
            "INSERT INTO idx_combo (resource_type, resource_id, param, element, ref_type, ref_id, token_mode, system,"
            " code, sort_at) VALUES (:resource_type, :resource_id, :param, :element, 'Patient', 'p', '*', '', 'c',"
            " '0001-01-01 00:00:00'), (:resource_type, 'o2', :param, :element, 'Patient', 'p', '*', '', 'c',"
            " '2026-02-01 10:00:00.250000')"), row)  # fmt: skip
    engine.dispose()
    command.upgrade(alembic_config(url), "head")
    texts = _date_texts(url)
    assert texts["idx_series.at"] == ["2026-02-01 10:00:00.000000"]
    assert texts["idx_combo.sort_at"] == ["0001-01-01 00:00:00.000000", "2026-02-01 10:00:00.250000"]


def test_the_index_follows_deletes_retractions_and_closed_flags(client, uid, database_url):
    first = submit(client, srs(uid, (95,) * 4, "2026-02-01T10:00:00Z"))  # 38.0
    second = submit(client, srs(uid, (80,) * 4, "2026-02-08T10:00:00Z"))  # 32.0: below 36, a drop of 6
    assert set(by_code(client, uid)) >= {"srs-below-cutoff", "srs-drop"}
    assert client.delete(f"/Observation/{second['id']}-total").status_code == 200
    submit(client, srs(uid, (92,) * 4, "2026-02-15T10:00:00Z"))  # 36.8: compared with 38.0, not the deleted 32.0
    (drop,) = by_code(client, uid)["srs-drop"]  # from 32.0 it would have been a rise
    assert drop["code"]["text"].startswith("SRS 36.8, down 1.2 from 38 last session.")
    ours = [r for r in _rows(database_url) if r[3] == uid]
    assert not any(r[1] == f"{second['id']}-total" for r in ours)  # the deleted result left the index
    active = {r[1] for r in ours if r[2] == "active-flag"}
    assert active == {f["id"] for flags in by_code(client, uid).values() for f in flags}  # only open Flags
    retracted = {**first, "status": "entered-in-error"}
    assert put(client, f"/QuestionnaireResponse/{first['id']}", retracted).status_code == 200
    assert not any(r[1] == f"{first['id']}-total" for r in _rows(database_url) if r[3] == uid)

"""Backups and restore, on both databases, with real server processes: ``fhir-server backup`` (SQLite's online
backup) or ``pg_dump -Fc`` taken while a thread keeps writing through HTTP, restored (the file put where a second
server's FHIR_SERVER_DATABASE_URL points; ``createdb`` + ``pg_restore``), and the second server compared with what
the first held.  Also the command's refusals, and its answer for a PostgreSQL URL."""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.store.migrate import head_revisions
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.process import cli, server_process
from tests.support.waiting import wait_for

# Authorization off (these tests are about the data), and no background workers writing beside the test's writes.
ENV = {
    "FHIR_SERVER_AUTH_REQUIRED": "false",
    **{f"FHIR_SERVER_{w}_WORKER": "false" for w in ("OUTBOX", "EXPORT", "SUBSCRIPTION", "MESSAGE", "TASK_EXPIRY")},
}
SYSTEM = "urn:test:backup"  # identifiers of the resources written before the backup
WRITES = "urn:test:backup-writes"  # identifiers of the writer thread's versions, one per version
WRITER_PATIENTS = 5
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"


# -- the scenario: write, back up while writing, restore, start a second server ------------------------------------


@dataclass
class Write:
    key: str  # "Patient/id"
    version: str
    body: dict[str, Any]
    sent: str  # the phase when the request went out: before | during | after (the backup)
    received: str = ""


class Writer(threading.Thread):
    """Keeps writing through HTTP until stopped: new versions of a few Patients (each version with its own
    identifier, so a search can tell which version the index holds) and new Observations.  ``phase`` is set by the
    test as the backup begins and ends; each write records the phase it was sent and answered in."""

    def __init__(self, base: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.base, self.tag = base, tag
        self.phase = "before"
        self.writes: list[Write] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                pid = f"w-{self.tag}-{n % WRITER_PATIENTS}"
                version = n // WRITER_PATIENTS + (1 if n % WRITER_PATIENTS else 0)
                patient = {"resourceType": "Patient", "id": pid, "identifier": [_id(WRITES, f"{pid}-v{version}")]}
                self._write(c, "PUT", f"/Patient/{pid}", patient)
                if n % 3 == 0:
                    self._write(c, "POST", "/Observation", _observation(pid, n))

    def _write(self, c: httpx.Client, method: str, path: str, body: dict[str, Any]) -> None:
        sent = self.phase
        response = c.request(method, path, json=body)
        if response.status_code not in (200, 201):  # serving must go on, unhindered, during a backup
            self.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return
        stored = response.json()
        key = f"{stored['resourceType']}/{stored['id']}"
        self.writes.append(Write(key, stored["meta"]["versionId"], stored, sent, self.phase))


@dataclass
class Scenario:
    backend: str
    history: dict[str, list[dict[str, Any]]]  # what the original server held before the backup, per resource
    searches: dict[str, list[dict[str, Any]]]
    writer: Writer
    backup: subprocess.CompletedProcess[str]
    backup_file: Path
    restored: httpx.Client


@pytest.fixture(scope="module")
def scenario(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    folder = tmp_path_factory.mktemp(f"backup-{backend}")
    if backend == "sqlite":
        yield from _sqlite_scenario(folder)
    else:
        yield from _postgres_scenario(folder, postgres_admin_url() or "")


def _sqlite_scenario(folder: Path) -> Iterator[Scenario]:
    backup_file = folder / "fhir-backup.db"
    with sqlite_database() as url, server_process(url, **ENV) as original:
        history, searches, writer, done = _back_up_while_writing(
            original.fhir_base, lambda: cli(url, "backup", str(backup_file))
        )
    # Restore: the backup file where the new server's FHIR_SERVER_DATABASE_URL points.
    (folder / "restored").mkdir()
    shutil.copyfile(backup_file, folder / "restored" / "fhir.db")
    restored_url = f"sqlite:///{folder / 'restored' / 'fhir.db'}"
    with server_process(restored_url, **ENV) as restored, httpx.Client(base_url=restored.fhir_base) as c:
        yield Scenario("sqlite", history, searches, writer, done, backup_file, c)


def _postgres_scenario(folder: Path, admin_url: str) -> Iterator[Scenario]:
    pg_dump, pg_restore, createdb = (postgres_tool(name) for name in ("pg_dump", "pg_restore", "createdb"))
    dump = folder / "fhir.dump"
    with postgres_database(admin_url) as url, server_process(url, **ENV) as original:
        history, searches, writer, done = _back_up_while_writing(
            original.fhir_base, lambda: _run([pg_dump, "--format=custom", f"--file={dump}", f"--dbname={url}"])
        )
    # Restore: a new database, and the dump into it.
    name = f"fhir_test_{uuid.uuid4().hex[:12]}"
    restored_url = f"{admin_url.rpartition('/')[0]}/{name}"
    created = _run([createdb, f"--maintenance-db={admin_url}", name])
    assert created.returncode == 0, created.stderr
    try:
        loaded = _run([pg_restore, "--no-owner", "--exit-on-error", f"--dbname={restored_url}", str(dump)])
        assert loaded.returncode == 0, loaded.stderr
        with server_process(restored_url, **ENV) as restored, httpx.Client(base_url=restored.fhir_base) as c:
            yield Scenario("postgresql", history, searches, writer, done, dump, c)
    finally:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _back_up_while_writing(
    base: str, back_up: Callable[[], subprocess.CompletedProcess[str]]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]], Writer, subprocess.CompletedProcess[str]]:
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=base, timeout=30) as c:
        keys, patient = _write_records(c, tag)
        history = {key: _history(c, key) for key in keys}
        searches = {query: _search(c, query) for query in _queries(tag, patient)}
    writer = Writer(base, tag)
    writer.start()
    try:
        wait_for(lambda: len(writer.writes) >= 6, "the writer thread writes")
        writer.phase = "during"
        done = back_up()
        writer.phase = "after"
        written = len(writer.writes)
        wait_for(lambda: len(writer.writes) >= written + 6, "the writer thread writes after the backup")
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    return history, searches, writer, done


def _write_records(c: httpx.Client, tag: str) -> tuple[list[str], str]:
    """Patients with several versions (one deleted), Observations with history and a scored SRS; returns every
    resource written (the server's own scoring output included) and the scored patient's id."""
    keys = []
    for n in range(3):
        pid = f"b-{tag}-{n}"
        for version in range(3):
            body = {"resourceType": "Patient", "id": pid, "identifier": [_id(SYSTEM, pid)]}
            _ok(c.put(f"/Patient/{pid}", json={**body, "name": [{"family": f"Rivera{version}"}]}))
        keys.append(f"Patient/{pid}")
    _ok(c.delete(f"/Patient/{keys[2].split('/')[1]}"))
    patient = keys[0].split("/")[1]
    for n in range(3):
        created = _ok(c.post("/Observation", json=_observation(patient, n)))
        keys.append(f"Observation/{created['id']}")
    amended = {**created, "status": "amended"}
    _ok(c.put(f"/{keys[-1]}", json=amended))
    _ok(c.post("/QuestionnaireResponse", json=_srs(patient)))
    for query in (f"Observation?subject=Patient/{patient}", f"Flag?patient={patient}"):
        keys += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in _search(c, query)]
    return sorted(set(keys)), patient


def _queries(tag: str, patient: str) -> list[str]:
    return [
        f"Patient?identifier={SYSTEM}|",
        f"Patient?family=Rivera2&identifier={SYSTEM}|b-{tag}-1",
        f"Observation?subject=Patient/{patient}&_sort=_id",
        f"Observation?subject=Patient/{patient}&status=amended",
        f"QuestionnaireResponse?subject=Patient/{patient}",
        f"Flag?patient={patient}",
    ]


# -- what the restored server must hold ---------------------------------------------------------------------------


def test_the_restored_server_serves_the_same_resources_and_history(scenario):
    assert len(scenario.history) >= 8, "the scenario wrote its resources"
    assert any(e["request"]["method"] == "DELETE" for h in scenario.history.values() for e in h), "a deletion"
    assert any(len(h) >= 3 for h in scenario.history.values()), "resources with several versions"
    for key, history in scenario.history.items():
        assert _history(scenario.restored, key) == history, key
        current = scenario.restored.get(key)
        if history[0]["request"]["method"] == "DELETE":  # newest first
            assert current.status_code == 410, key
        else:
            assert current.status_code == 200 and current.json() == history[0]["resource"], key


def test_searches_on_the_restored_server_find_the_same(scenario):
    assert any("Observation" in q and len(found) >= 3 for q, found in scenario.searches.items()), "scored output"
    for query, found in scenario.searches.items():
        assert found, f"{query} found nothing on the original: the comparison would prove nothing"
        assert _search(scenario.restored, query) == found, query


def test_writes_during_the_backup_are_whole_versions_or_absent(scenario):
    writer = scenario.writer
    assert not writer.failures, writer.failures
    assert {w.sent for w in writer.writes} >= {"before", "during", "after"}, "writes went on through the backup"
    by_key: dict[str, list[Write]] = {}
    for write in writer.writes:
        by_key.setdefault(write.key, []).append(write)
    for key, writes in by_key.items():
        history = _history(scenario.restored, key) if scenario.restored.get(key).status_code == 200 else []
        versions = [int(e["resource"]["meta"]["versionId"]) for e in reversed(history)]
        assert versions == list(range(1, len(versions) + 1)), f"{key}: history not contiguous {versions}"
        for write in writes:
            if write.received == "before":  # committed before the backup began: in it
                assert int(write.version) <= len(versions), f"{key} v{write.version} missing"
            if write.sent == "after":  # begun after the backup had ended: not in it
                assert int(write.version) > len(versions), f"{key} v{write.version} in the backup"
            if int(write.version) <= len(versions):  # each version present is the version written, whole
                assert history[-int(write.version)]["resource"] == write.body, f"{key} v{write.version}"
        if versions and key.startswith("Patient/"):  # the search index holds the same version as the content
            pid = key.split("/")[1]
            found = _search(scenario.restored, f"Patient?identifier={WRITES}|{pid}-v{len(versions)}")
            assert [e["resource"]["id"] for e in found] == [pid], key


def test_the_backup_file(scenario):
    if scenario.backend == "postgresql":
        assert scenario.backup.returncode == 0, scenario.backup.stderr
        assert scenario.backup_file.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        return
    done = scenario.backup
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "backing up" in done.stderr and "secret key" in done.stderr
    revision = next(iter(head_revisions()))
    assert done.stdout.startswith(f"backup written: {scenario.backup_file} (")
    assert f"schema revision {revision})" in done.stdout and " versions;" in done.stdout
    # A standalone file: no -wal beside it, nothing left of the temporary copy, readable by patients' staff only.
    assert sorted(p.name for p in scenario.backup_file.parent.iterdir()) == [scenario.backup_file.name, "restored"]
    assert stat.S_IMODE(scenario.backup_file.stat().st_mode) == 0o600
    with sqlite3.connect(f"file:{scenario.backup_file}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- the command's refusals and its PostgreSQL answer --------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_url() -> Iterator[str]:
    with sqlite_database() as url:
        assert cli(url, "db", "upgrade").returncode == 0
        yield url


def test_an_existing_destination_is_kept_unless_forced(sqlite_url, tmp_path):
    dest = tmp_path / "backup.db"
    dest.write_text("an older backup")
    refused = cli(sqlite_url, "backup", str(dest))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"fhir-server backup: {dest} exists: not replaced (give --force to replace it)"
    assert dest.read_text() == "an older backup"
    assert os.listdir(tmp_path) == ["backup.db"]  # no temporary copy left behind
    forced = cli(sqlite_url, "backup", "--force", str(dest))
    assert forced.returncode == 0, forced.stderr
    assert dest.read_bytes()[:16] == b"SQLite format 3\0"


def test_a_destination_in_a_missing_folder_is_one_line_naming_it(sqlite_url, tmp_path):
    dest = tmp_path / "missing" / "backup.db"
    refused = cli(sqlite_url, "backup", str(dest))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"fhir-server backup: cannot write {dest}: the folder {dest.parent} does not exist"
    ]
    assert not dest.parent.exists()


def test_a_missing_database_file_is_named_and_not_created(tmp_path):
    database = tmp_path / "nothing-here.db"
    refused = cli(f"sqlite:///{database}", "backup", str(tmp_path / "backup.db"))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"fhir-server backup: {database}: no such database file (FHIR_SERVER_DATABASE_URL)"
    assert os.listdir(tmp_path) == []


def test_a_postgresql_database_gets_the_pg_dump_command_without_its_password(tmp_path):
    # Port 1: nothing listens there, and nothing needs to; the command must not pretend to back anything up.
    url = "postgresql://fhir:s3cret-Pw@127.0.0.1:1/fhir?sslmode=require&password=other-s3cret"
    answer = cli(url, "backup", str(tmp_path / "fhir.dump"))
    assert answer.returncode == 2
    lines = (answer.stdout + answer.stderr).strip().splitlines()
    assert len(lines) == 2 and 'README "Backups and restore"' in lines[0]
    assert lines[1].strip() == (
        f"pg_dump --format=custom --file={tmp_path / 'fhir.dump'} "
        "--dbname='postgresql://fhir@127.0.0.1:1/fhir?sslmode=require'"
    )
    assert "s3cret" not in answer.stdout + answer.stderr
    assert os.listdir(tmp_path) == []


# -- helpers -------------------------------------------------------------------------------------------------------


def postgres_tool(name: str) -> str:
    """A PostgreSQL client program on PATH or in /usr/lib/postgresql/<version>/bin (the newest); skipped without
    one, but under CI, which installs them, a missing one fails."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version, reverse=True)), None
    )
    if found:
        return found
    message = f"{name} not found on PATH or in /usr/lib/postgresql/*/bin: the PostgreSQL restore test needs it"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message + " (install postgresql-client)")


def _version(path: str) -> tuple[int, ...]:
    number = Path(path).parts[-3]
    return tuple(int(part) for part in number.split(".") if part.isdigit())


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()


def _history(c: httpx.Client, key: str) -> list[dict[str, Any]]:
    """The instance's history entries, newest first, without the fullUrl (each server has its own base)."""
    bundle = _ok(c.get(f"/{key}/_history", params={"_count": 100}))
    return [{k: v for k, v in entry.items() if k != "fullUrl"} for entry in bundle.get("entry", [])]


def _search(c: httpx.Client, query: str) -> list[dict[str, Any]]:
    path, _, params = query.partition("?")
    bundle = _ok(c.get(f"/{path}?{params}&_count=100"))
    return sorted(({k: v for k, v in e.items() if k != "fullUrl"} for e in bundle.get("entry", [])), key=str)


def _id(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def _observation(patient: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test:backup-code", "code": "mood"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-20T16:45:00Z",
        "valueInteger": n,
    }


def _srs(patient: str) -> dict[str, Any]:
    marks = {"relationship": 85, "goals": 88, "approach": 80, "overall": 60}
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": SRS,
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-11-20T16:45:00Z",
        "item": [{"linkId": k, "answer": [{"valueInteger": v}]} for k, v in marks.items()],
    }

"""Audit retention (``FHIR_SERVER_AUDIT_RETENTION_DAYS``), on both databases: the AuditEvents of reads and
searches older than the retention are removed with their versions and index rows, by ``fhir-server audit prune``
(a progress bar and a summary) and by the sweep of a server process; newer ones, and those of writes, are kept."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import create_engine, func, select, update

from fhir_server.auth.retention import prune
from fhir_server.config import Settings
from fhir_server.store.engine import normalise_url
from fhir_server.store.tables import INDEX_TABLES, resource_versions, resources
from tests.erasure.support import FHIR_JSON, created
from tests.support.process import cli
from tests.support.server import RunningServer, ServerThread
from tests.support.waiting import wait_for


def _trail(server: RunningServer, c: httpx.Client) -> dict[str, str]:
    """A write, a read and a search of a new patient, audited: {subtype: AuditEvent id} of the three."""
    known = _events(server, c)
    patient = f"r{uuid.uuid4().hex[:12]}"
    created(c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=FHIR_JSON))
    assert c.get(f"/Patient/{patient}").status_code == 200
    assert c.get("/Patient", params={"_id": patient}).status_code == 200
    new = {k: v for k, v in _events(server, c).items() if k not in known}
    by_subtype = {event["subtype"][0]["code"]: event_id for event_id, event in new.items()}
    assert set(by_subtype) == {"update", "read", "search-type"}, by_subtype
    return by_subtype


def _events(server: RunningServer, c: httpx.Client) -> dict[str, dict]:
    server.app.state.audit.flush()
    found = c.get("/AuditEvent", params={"_count": "1000"}).json()
    return {e["resource"]["id"]: e["resource"] for e in found.get("entry", [])}


def _age(server: RunningServer, event_ids: list[str], days: int) -> None:
    """As if these AuditEvents had been stored ``days`` ago."""
    engine = create_engine(normalise_url(server.settings.database_url))
    try:
        with engine.begin() as conn:
            for table in (resources, resource_versions):
                mine = (table.c.resource_type == "AuditEvent", table.c.id.in_(event_ids))
                for row in conn.execute(select(table.c.id, table.c.last_updated).where(*mine)).all():
                    earlier = row.last_updated - timedelta(days=days)
                    statement = update(table).where(table.c.resource_type == "AuditEvent", table.c.id == row.id)
                    conn.execute(statement.values(last_updated=earlier))
    finally:
        engine.dispose()


def _rows_left(server: RunningServer, event_id: str) -> int:
    engine = create_engine(normalise_url(server.settings.database_url))
    try:
        with engine.connect() as conn:
            count = conn.execute(
                select(func.count()).where(
                    resource_versions.c.resource_type == "AuditEvent", resource_versions.c.id == event_id
                )
            ).scalar_one()
            for table in INDEX_TABLES.values():
                count += conn.execute(
                    select(func.count()).where(table.c.resource_type == "AuditEvent", table.c.resource_id == event_id)
                ).scalar_one()
            return count
    finally:
        engine.dispose()


def test_the_command_removes_old_reads_and_keeps_writes_and_new_reads(server, admin):
    old = _trail(server, admin)
    _age(server, list(old.values()), 40)
    new = _trail(server, admin)
    assert _rows_left(server, old["read"]) > 1  # its version and index rows, before
    done = cli(server.settings.database_url, "audit", "prune", "--days", "30")
    assert done.returncode == 0, done.stderr
    assert "pruning [" in done.stderr
    assert "2 AuditEvents of reads and searches stored before" in done.stdout, done.stdout
    assert re.search(r"; [1-9][0-9]* older ones kept \(writes", done.stdout), done.stdout  # this test's write at least
    for subtype in ("read", "search-type"):
        assert admin.get(f"/AuditEvent/{old[subtype]}").status_code == 404
        assert _rows_left(server, old[subtype]) == 0
        assert admin.get(f"/AuditEvent/{new[subtype]}").status_code == 200
    assert admin.get(f"/AuditEvent/{old['update']}").status_code == 200


def test_two_sweeps_at_once_share_the_work(server, admin):
    trails = [_trail(server, admin) for _ in range(3)]
    old = [trail[kind] for trail in trails for kind in ("read", "search-type")]
    _age(server, [event_id for trail in trails for event_id in trail.values()], 50)
    repo = server.app.state.fhir.repo
    with ThreadPoolExecutor(max_workers=2) as pool:
        swept = list(pool.map(lambda _: prune(repo, 45)[0], range(2)))
    assert sum(s.removed for s in swept) == len(old)
    assert all(admin.get(f"/AuditEvent/{event_id}").status_code == 404 for event_id in old)
    assert all(admin.get(f"/AuditEvent/{trail['update']}").status_code == 200 for trail in trails)


def test_the_command_needs_a_retention(server):
    done = cli(server.settings.database_url, "audit", "prune")
    assert done.returncode == 1
    assert "give --days N" in done.stderr and "Traceback" not in done.stderr


def test_the_server_sweeps_with_the_setting(server, admin, backend):
    old = _trail(server, admin)
    _age(server, list(old.values()), 10)
    settings = Settings(
        database_url=server.settings.database_url,
        _env_file=None,
        load_library=False,
        audit_retention_days=7,
        audit_retention_worker=True,
    )
    with ServerThread(settings, backend):
        wait_for(lambda: admin.get(f"/AuditEvent/{old['read']}").status_code == 404, "the sweep removed the old read")
        wait_for(lambda: admin.get(f"/AuditEvent/{old['search-type']}").status_code == 404, "and the old search")
    assert admin.get(f"/AuditEvent/{old['update']}").status_code == 200

"""docs/security.md integrity: a locked or unreachable database is a 503 with Retry-After (never a 500, never a
partial write), and the server recovers by itself once the database is back."""

from __future__ import annotations

import sqlite3

import httpx

from fhir_server.config import Settings
from tests.api.fhir import assert_outcome, patient, post
from tests.support.server import ServerThread, free_port


def test_sqlite_lock_held_elsewhere_is_503_lock_error_then_recovers(tmp_path, uid):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    settings = Settings(database_url=url, sqlite_busy_timeout_ms=200, _env_file=None)
    with ServerThread(settings, "sqlite") as server, httpx.Client(base_url=server.fhir_base, timeout=30) as client:
        blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = post(client, "/Patient", patient(uid))
            assert_outcome(response, 503, "lock-error")
            assert response.headers["retry-after"].isdigit()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert post(client, "/Patient", patient(uid)).status_code == 201
        total = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_total": "accurate"}).json()["total"]
        assert total == 1  # the refused write left nothing behind


def test_unreachable_postgres_is_503_transient(tmp_path):
    from fhir_server.app import create_app

    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(Settings(database_url=dead, _env_file=None))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/fhir/Patient/abc")

    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    # In a thread of its own: a session-scoped Playwright browser in this worker keeps an event loop running here.
    with ThreadPoolExecutor(1) as pool:
        response = pool.submit(asyncio.run, run()).result()
    assert_outcome(response, 503, "transient")
    assert response.headers["retry-after"] == "5"

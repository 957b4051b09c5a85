"""A server worker freezes what its startup made out of the garbage collector's full collections (app.py
``freeze_startup_objects``): with ~190,000 startup objects walked, one full collection stalled every request in
the worker for 100-250 ms under load.  Run in a child process: freezing is for a process that serves one app, and
the test process runs many."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Starts the app the way a worker does (fhir_server.asgi, or create_app without owns_process), runs its startup,
# and reports how many objects a full collection would walk beside how many are frozen.
CHILD = """
import asyncio, gc, json, sys
from fhir_server.store.migrate import upgrade
upgrade(sys.argv[1])
if sys.argv[2] == "worker":
    from fhir_server.asgi import app
else:
    from fhir_server.app import create_app
    app = create_app()

async def started() -> dict:
    async with app.router.lifespan_context(app):
        gc.collect()
        return {"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}

print(json.dumps(asyncio.run(started())))
"""


def _startup_heap(tmp_path: Path, how: str) -> dict:
    url = f"sqlite:///{tmp_path / f'{how}.db'}"
    env = {
        **os.environ,
        "FHIR_SERVER_DATABASE_URL": url,
        "FHIR_SERVER_AUTH_REQUIRED": "false",
        "FHIR_SERVER_OUTBOX_WORKER": "false",
        "FHIR_SERVER_LOG_LEVEL": "error",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, how], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_server_worker_leaves_its_startup_objects_out_of_full_collections(tmp_path: Path) -> None:
    heap = _startup_heap(tmp_path, "worker")
    # the models, search registry and library are frozen; a full collection walks a small remainder
    assert heap["frozen"] > 50_000
    assert heap["walked"] < heap["frozen"] / 10


def test_an_app_that_shares_its_process_freezes_nothing(tmp_path: Path) -> None:
    """Tests run many apps in one process: frozen, a stopped app's cycles would never be freed."""
    heap = _startup_heap(tmp_path, "shared")
    assert heap["frozen"] == 0
    assert heap["walked"] > 50_000

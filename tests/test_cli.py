"""The two-command setup: ``fhir-server serve`` migrates the embedded SQLite database and answers /metadata;
``fhir-server db upgrade`` is idempotent.  The server runs as its own process, as ``make serve`` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.support.server import free_port


def _env(tmp_path):
    return {**os.environ, "FHIR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def test_db_upgrade_is_idempotent(tmp_path):
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "fhir_server", "db", "upgrade"], env=_env(tmp_path), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "latest schema" in done.stdout


def test_serve_answers_metadata(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "server did not start within 30 s"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["resourceType"] == "CapabilityStatement"
        assert (tmp_path / "cli.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_help_lists_commands():
    done = subprocess.run([sys.executable, "-m", "fhir_server", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "serve" in done.stdout and "db" in done.stdout


def _run(tmp_path, *args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**_env(tmp_path), **({"FHIR_SERVER_DATABASE_URL": database} if database else {})}
    return subprocess.run([sys.executable, "-m", "fhir_server", *args], env=env, capture_output=True, text=True)


def test_every_command_works_on_a_new_database(tmp_path):
    """Any command may be the first run on a new database, as ``serve`` may (``load`` and ``reindex`` used to end in
    a stack trace: "no such table: resources"): the command line brings the schema up to date first."""
    for number, args in enumerate(
        (["load", "questionnaires"], ["reindex"], ["outbox", "list"], ["clients", "list"], ["export", "list"])
    ):
        done = _run(tmp_path, *args, database=f"sqlite:///{tmp_path / f'new-{number}.db'}")
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    loaded = _run(tmp_path, "load", "questionnaires", database=f"sqlite:///{tmp_path / 'new-0.db'}")
    assert loaded.returncode == 0 and "0 resources stored" in loaded.stdout, loaded.stdout


def test_commands_on_a_database_that_does_not_answer_say_so(tmp_path):
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    done = _run(tmp_path, "clients", "list", database=down)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "fhir-server clients: cannot open the database: connection failed" in done.stderr, done.stderr

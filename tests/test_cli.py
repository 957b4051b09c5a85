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

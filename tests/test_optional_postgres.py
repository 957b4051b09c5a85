"""The PostgreSQL driver is the optional extra ``postgres`` (pyproject.toml): a SQLite-only install imports and
serves without it, and ``serve`` with a postgresql:// URL says in one line how to install it.  Each case runs in
its own interpreter whose ``import psycopg`` fails, as on a machine without the driver."""

from __future__ import annotations

import os
import subprocess
import sys

WITHOUT_DRIVER = "import sys; sys.modules['psycopg'] = None\n"  # makes every ``import psycopg`` fail


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DRIVER + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_module_imports_without_the_postgres_driver():
    done = _run(
        "import importlib, pkgutil, fhir_server\n"
        "for module in pkgutil.walk_packages(fhir_server.__path__, 'fhir_server.'):\n"
        "    if not module.name.startswith('fhir_server.store.migrations'):  # run by Alembic, not imported\n"
        "        importlib.import_module(module.name)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_serve_with_a_postgres_url_says_how_to_install_the_driver():
    done = _run(
        "from fhir_server.cli import main; sys.exit(main(['serve', '--port', '9']))",
        FHIR_SERVER_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "fhir-server: not starting: FHIR_SERVER_DATABASE_URL is a PostgreSQL database but its driver is not installed: "
        "pip install 'fhir-server[postgres]' (or psycopg[binary])"
    ]
    assert "Traceback" not in done.stderr

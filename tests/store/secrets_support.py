"""What the secrets-at-rest tests share: a fresh migrated database per test (rotations and refusals must not touch
the databases other tests' servers hold open), engines with a chosen key, the raw text of every table, and the
command line run as an operator runs it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import String, inspect, text
from sqlalchemy.engine import Engine

from fhir_server.config import Settings
from fhir_server.ehr import registry
from fhir_server.smart.sessions import AppSessionStore
from fhir_server.store import keys as key_table
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.process import ROOT, environment


@contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    made = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with made as url:
        upgrade(url)
        yield url


def settings_for(url: str, key: str, previous: str = "", **extra: object) -> Settings:
    # secret_key_file="" so a developer's fhir-server.key in the working directory never stands in for "no key"
    return Settings(
        database_url=url,
        secret_key=key,
        secret_key_previous=previous,
        secret_key_file="",
        load_library=False,
        outbox_worker=False,
        _env_file=None,
        **extra,
    )


@contextmanager
def engine_for(url: str, key: str, previous: str = "") -> Iterator[Engine]:
    engine = build_engine(settings_for(url, key, previous))
    try:
        yield engine
    finally:
        engine.dispose()


def raw_text(engine: Engine) -> list[tuple[str, str, str]]:
    """(table, column, value) for every non-null value of every text column of every table, read with plain SQL:
    what a copy of the database (a backup, a replica, an injected SELECT) gives away."""
    found = []
    schema = inspect(engine)
    with engine.connect() as conn:
        for table in schema.get_table_names():
            for column in schema.get_columns(table):
                if isinstance(column["type"], String):  # VARCHAR, TEXT, CHAR ...
                    query = text(f'SELECT "{column["name"]}" FROM "{table}"')
                    found += [(table, column["name"], str(v)) for (v,) in conn.execute(query) if v is not None]
    return found


def leaked(engine: Engine, *values: str) -> list[tuple[str, str, str]]:
    return [(t, c, v[:40]) for t, c, v in raw_text(engine) if any(value in v for value in values)]


def raw_value(engine: Engine, table: str, column: str, where: str, **params: object) -> str:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT {column} FROM {table} WHERE {where}"), params).scalar_one()


def private_parts(engine: Engine) -> list[str]:
    """The private members of every stored signing key (RSA: d, p, q, dp, dq, qi), decrypted."""
    parts = []
    for row in key_table.load_keys(engine):
        jwk = orjson.loads(str(row["private_jwk"]))
        parts += [jwk[name] for name in ("d", "p", "q", "dp", "dq", "qi") if name in jwk]
    return parts


def store_secrets(engine: Engine, tag: str) -> dict[str, str]:
    """An EHR registered with a client secret and a launch session holding that EHR's access and refresh tokens
    and a PKCE verifier, through the same functions the CLI and the launch use.  Returns the plain values."""
    values = {
        "client_secret": "ehr-client-secret-" + secrets.token_urlsafe(24),
        "access_token": "ehr-access-" + secrets.token_urlsafe(32),
        "refresh_token": "ehr-refresh-" + secrets.token_urlsafe(32),
        "code_verifier": secrets.token_urlsafe(96),  # 128 characters, the most RFC 7636 allows
    }
    ehr = registry.register(
        engine,
        issuer=f"https://ehr-{tag}.example.org/fhir",
        client_id="fit-app",
        auth_method="client_secret_basic",
        client_secret=values["client_secret"],
    )
    sessions = AppSessionStore(engine, 3600)
    _, session = sessions.create_session(ehr_id=ehr.id, code_verifier=values["code_verifier"], patient=f"p-{tag}")
    sessions.update(session, access_token=values["access_token"], refresh_token=values["refresh_token"])
    values["issuer"], values["session_hash"] = ehr.issuer, session.session_hash
    return values


def fhir_server(
    *args: str, url: str, cwd: Path | None = None, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``fhir-server ARGS`` in its own process with exactly these FHIR_SERVER_* settings (and the run's key unless
    ``FHIR_SERVER_SECRET_KEY`` is given)."""
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *args],
        env=environment(FHIR_SERVER_DATABASE_URL=url, FHIR_SERVER_LOAD_LIBRARY="false", **env),
        cwd=cwd or ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )

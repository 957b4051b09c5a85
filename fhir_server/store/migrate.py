"""Alembic, driven from code so no alembic.ini is needed at the working directory."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from fhir_server.store.engine import normalise_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def migration_problem(database_url: str) -> str | None:
    """Bring the schema up to date for an administrative command (``load``, ``clients add``...: each may be the first
    thing run on a new database, as ``serve`` is); a database that cannot be opened is said in one line, else None."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        upgrade(database_url)
    except SQLAlchemyError as exc:
        return f"cannot open the database: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0][:300]}"
    return None


@cache
def head_revisions() -> frozenset[str]:
    """The revisions this code's migrations end at; read once (parsing the scripts costs ~100 ms)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def revision_problem(engine: Engine) -> str | None:
    """None when the database's schema is at this code's head revision, else a line saying where it is (revision
    ids only: no URL, no data).  For the readiness check: a schema behind (or ahead, a newer version migrated it)
    is one this code may fail on."""
    with engine.connect() as conn:
        current = frozenset(MigrationContext.configure(conn).get_current_heads())
    heads = head_revisions()
    if current == heads:
        return None
    at = ", ".join(sorted(current)) or "none"
    return f"schema at revision {at}, this version needs {', '.join(sorted(heads))}"

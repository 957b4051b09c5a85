"""Alembic, driven from code so no alembic.ini is needed at the working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

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

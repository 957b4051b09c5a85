"""SQL for the SMART app's server-side sessions (only store/ talks SQL).

Rows are keyed by the SHA-256 of the session id; every read and update is limited to unexpired rows, so an expired
session is gone for every purpose even before ``purge_expired`` deletes it.  Rows come back as plain dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from fhir_server.store import secret_store
from fhir_server.store.tables import app_sessions

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
_c = app_sessions.c


# The EHR's tokens and the PKCE verifier are encrypted at rest (store/crypto.py); the other columns are not secrets.
SECRET_COLUMNS = (_c.access_token, _c.refresh_token, _c.code_verifier)


def _sealed(engine: Engine, values: Row) -> Row:
    """Called before the write's transaction opens (secret_store.seal)."""
    sealed = dict(values)
    for column in SECRET_COLUMNS:
        if column.name in sealed:
            sealed[column.name] = secret_store.seal(engine, column, sealed[column.name])
    return sealed


def _opened(engine: Engine, row: Any) -> Row:
    opened = dict(row)
    for column in SECRET_COLUMNS:
        opened[column.name] = secret_store.open_value(engine, column, opened[column.name])
    return opened


def insert_session(engine: Engine, values: Row) -> None:
    values = _sealed(engine, values)
    with engine.begin() as conn:
        conn.execute(insert(app_sessions).values(**values))


def get_session(engine: Engine, session_hash: str, now: datetime) -> Row | None:
    with engine.connect() as conn:
        row = (
            conn.execute(select(app_sessions).where(_c.session_hash == session_hash, _c.expires_at > now))
            .mappings()
            .first()
        )
    return _opened(engine, row) if row else None


def update_session(engine: Engine, session_hash: str, now: datetime, values: Row) -> bool:
    """Change columns of an unexpired session; False when there is none (expired or unknown)."""
    values = _sealed(engine, values)
    with engine.begin() as conn:
        changed = conn.execute(
            update(app_sessions).where(_c.session_hash == session_hash, _c.expires_at > now).values(**values)
        )
    return changed.rowcount == 1


def save_draft(engine: Engine, session_hash: str, draft: str, now: datetime) -> bool:
    """Store the draft answers unless the session has been submitted (a late save must not look like an
    unsent form) or has expired."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(app_sessions)
            .where(_c.session_hash == session_hash, _c.expires_at > now, _c.response_id.is_(None))
            .values(draft=draft)
        )
    return changed.rowcount == 1


def mark_submitted(write: WriteSession, session_hash: str, response_id: str, now: datetime) -> None:
    """Inside the transaction that stores the response (``write``): both commit together or neither does."""
    write.conn.execute(
        update(app_sessions)
        .where(_c.session_hash == session_hash)
        .values(response_id=response_id, submitted_at=now, draft=None)
    )


def rekey_session(engine: Engine, old_hash: str, new_hash: str, now: datetime) -> bool:
    """Give an unexpired session a new id (after the authorization callback, against session fixation)."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(app_sessions).where(_c.session_hash == old_hash, _c.expires_at > now).values(session_hash=new_hash)
        )
    return changed.rowcount == 1


def delete_session(engine: Engine, session_hash: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(app_sessions).where(_c.session_hash == session_hash))


def purge_expired(engine: Engine, now: datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(delete(app_sessions).where(_c.expires_at <= now)).rowcount

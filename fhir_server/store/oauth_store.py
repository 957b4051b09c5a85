"""SQL for the authorization server (only store/ talks SQL).

Every function takes the engine and runs in its own short transaction; rows come back as plain dicts.  Single use
(authorization codes, rotated refresh tokens, assertion jtis) is decided by the database with a conditional
UPDATE or a primary key, so two concurrent requests can never both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.schema import Table

from fhir_server.store.tables import (
    oauth_assertion_jtis,
    oauth_clients,
    oauth_codes,
    oauth_launches,
    oauth_login_sessions,
    oauth_refresh_tokens,
    oauth_revoked_grants,
    oauth_revoked_tokens,
    oauth_users,
    supervised_organizations,
)

Row = dict[str, Any]
CODE_MEMORY = timedelta(hours=1)


class AlreadyExists(Exception):
    """A client id or username that is taken."""


def _insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary key exists; True when the row was inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    # RETURNING, not rowcount: rowcount is not reliable for this statement across drivers (psycopg gives 0).
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return conn.execute(statement).first() is not None


def _one(engine: Engine, statement: Any) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(statement).mappings().first()
    return dict(row) if row else None


# -- clients ------------------------------------------------------------------------------------------------
def add_client(engine: Engine, values: Row) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(insert(oauth_clients).values(**values))
    except IntegrityError:
        raise AlreadyExists(f"client '{values['client_id']}' already exists") from None


def get_client(engine: Engine, client_id: str) -> Row | None:
    return _one(engine, select(oauth_clients).where(oauth_clients.c.client_id == client_id))


def set_client_scope(engine: Engine, client_id: str, scope: str) -> bool:
    with engine.begin() as conn:
        changed = conn.execute(update(oauth_clients).where(oauth_clients.c.client_id == client_id).values(scope=scope))
        return changed.rowcount == 1


def list_clients(engine: Engine) -> list[Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(oauth_clients).order_by(oauth_clients.c.created_at)).mappings().all()
    return [dict(r) for r in rows]


def remove_client(engine: Engine, client_id: str) -> bool:
    """Deletes the client and its refresh tokens (its access tokens expire on their own)."""
    with engine.begin() as conn:
        conn.execute(
            update(oauth_refresh_tokens).where(oauth_refresh_tokens.c.client_id == client_id).values(revoked=True)
        )
        return conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id == client_id)).rowcount == 1


def client_origins(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [str(r) for r in conn.execute(select(oauth_clients.c.origins)).scalars()]


# -- users --------------------------------------------------------------------------------------------------
def add_user(engine: Engine, values: Row, supervises: Sequence[str] = ()) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(insert(oauth_users).values(**values))
            _supervise(conn, values["user_id"], supervises)
    except IntegrityError:
        linked = values.get("external_subject")
        if linked and get_user_by_external(engine, values["external_issuer"], linked):
            raise AlreadyExists(f"external subject '{linked}' is already linked to another user") from None
        raise AlreadyExists(f"user '{values['username']}' already exists") from None


def get_user(engine: Engine, user_id: str) -> Row | None:
    return _one(engine, select(oauth_users).where(oauth_users.c.user_id == user_id))


def get_user_by_name(engine: Engine, username: str) -> Row | None:
    return _one(engine, select(oauth_users).where(oauth_users.c.username == username))


def get_user_by_external(engine: Engine, issuer: str, subject: str) -> Row | None:
    """The user linked to this identity at an external OpenID Connect provider."""
    return _one(
        engine,
        select(oauth_users).where(oauth_users.c.external_issuer == issuer, oauth_users.c.external_subject == subject),
    )


def list_users(engine: Engine) -> list[Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(oauth_users).order_by(oauth_users.c.username)).mappings().all()
    return [dict(r) for r in rows]


def remove_user(engine: Engine, username: str) -> bool:
    """Deletes the user, their refresh tokens and their login sessions."""
    with engine.begin() as conn:
        user_id = conn.execute(select(oauth_users.c.user_id).where(oauth_users.c.username == username)).scalar()
        if user_id is None:
            return False
        conn.execute(update(oauth_refresh_tokens).where(oauth_refresh_tokens.c.user_id == user_id).values(revoked=True))
        conn.execute(delete(oauth_login_sessions).where(oauth_login_sessions.c.user_id == user_id))
        conn.execute(delete(supervised_organizations).where(supervised_organizations.c.user_id == user_id))
        conn.execute(delete(oauth_users).where(oauth_users.c.user_id == user_id))
    return True


# -- supervisors' organisations (reporting/access.py) ---------------------------------------------------------
def _supervise(conn: Connection, user_id: str, organizations: Sequence[str]) -> None:
    conn.execute(delete(supervised_organizations).where(supervised_organizations.c.user_id == user_id))
    rows = [{"user_id": user_id, "organization": o} for o in sorted(set(organizations))]
    if rows:
        conn.execute(insert(supervised_organizations), rows)


def set_supervised(engine: Engine, username: str, organizations: Sequence[str]) -> bool:
    """Replaces the organisations the user supervises; False for an unknown user."""
    with engine.begin() as conn:
        user_id = conn.execute(select(oauth_users.c.user_id).where(oauth_users.c.username == username)).scalar()
        if user_id is None:
            return False
        _supervise(conn, user_id, organizations)
    return True


def supervised(engine: Engine, user_id: str, fhir_user: str | None = None) -> list[str]:
    """The organisations a user supervises; with ``fhir_user``, only if it is the user's (a token's ``sub`` and
    ``fhirUser`` must both be this user's: another issuer's subject never matches one of ours by chance)."""
    statement = (
        select(supervised_organizations.c.organization)
        .join(oauth_users, oauth_users.c.user_id == supervised_organizations.c.user_id)
        .where(supervised_organizations.c.user_id == user_id)
        .order_by(supervised_organizations.c.organization)
    )
    if fhir_user is not None:
        statement = statement.where(oauth_users.c.fhir_user == fhir_user)
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(statement)]


# -- authorization codes ------------------------------------------------------------------------------------
def save_code(engine: Engine, values: Row) -> None:
    with engine.begin() as conn:
        conn.execute(insert(oauth_codes).values(used=False, sid=None, **values))


def redeem_code(engine: Engine, code_hash: str, client_id: str, sid: str, now: datetime) -> tuple[str, Row | None]:
    """Marks the code used and binds it to the grant ``sid`` in one conditional UPDATE.

    Returns ("ok", row), ("reused", row) when it was redeemed before (the caller revokes ``row["sid"]``), or
    ("invalid", None) for an unknown, expired or foreign code."""
    with engine.begin() as conn:
        claimed = conn.execute(
            update(oauth_codes)
            .where(
                oauth_codes.c.code_hash == code_hash,
                oauth_codes.c.client_id == client_id,
                oauth_codes.c.used.is_(False),
                oauth_codes.c.expires_at > now,
            )
            .values(used=True, sid=sid)
        ).rowcount
        row = conn.execute(select(oauth_codes).where(oauth_codes.c.code_hash == code_hash)).mappings().first()
    if row is None:
        return "invalid", None
    if claimed == 1:
        return "ok", dict(row)
    return ("reused", dict(row)) if row["used"] and row["sid"] else ("invalid", None)


# -- refresh tokens -----------------------------------------------------------------------------------------
def save_refresh_token(engine: Engine, values: Row) -> None:
    with engine.begin() as conn:
        conn.execute(insert(oauth_refresh_tokens).values(used=False, revoked=False, **values))


def find_refresh_token(engine: Engine, token_hash: str) -> Row | None:
    """The token with ``grant_revoked``: a token saved after its grant was revoked (a race) is dead too."""
    statement = (
        select(oauth_refresh_tokens, oauth_revoked_grants.c.sid.is_not(None).label("grant_revoked"))
        .select_from(
            oauth_refresh_tokens.outerjoin(
                oauth_revoked_grants, oauth_revoked_grants.c.sid == oauth_refresh_tokens.c.sid
            )
        )
        .where(oauth_refresh_tokens.c.token_hash == token_hash)
    )
    return _one(engine, statement)


def use_refresh_token(engine: Engine, token_hash: str) -> bool:
    """Rotation: True for the one request that marks the token used; False when it was used already."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(oauth_refresh_tokens)
                .where(oauth_refresh_tokens.c.token_hash == token_hash, oauth_refresh_tokens.c.used.is_(False))
                .values(used=True)
            ).rowcount
            == 1
        )


# -- launch contexts ----------------------------------------------------------------------------------------
def save_launch(engine: Engine, values: Row) -> None:
    with engine.begin() as conn:
        conn.execute(insert(oauth_launches).values(**values))


def get_launch(engine: Engine, launch_id: str, now: datetime) -> Row | None:
    return _one(
        engine,
        select(oauth_launches).where(oauth_launches.c.launch_id == launch_id, oauth_launches.c.expires_at > now),
    )


# -- login sessions -----------------------------------------------------------------------------------------
def create_session(engine: Engine, values: Row) -> None:
    with engine.begin() as conn:
        conn.execute(insert(oauth_login_sessions).values(**values))


def get_session(engine: Engine, session_hash: str, now: datetime) -> Row | None:
    return _one(
        engine,
        select(oauth_login_sessions).where(
            oauth_login_sessions.c.session_hash == session_hash, oauth_login_sessions.c.expires_at > now
        ),
    )


def update_session(engine: Engine, key: str, **values: Any) -> None:
    """``values`` may include a new ``session_hash``: the id changes at login (no session fixation)."""
    with engine.begin() as conn:
        conn.execute(update(oauth_login_sessions).where(oauth_login_sessions.c.session_hash == key).values(**values))


def take_external_login(engine: Engine, key: str, value: str) -> bool:
    """Clears the session's identity-provider round trip if it is still ``value``: True for the one callback that
    may use it (a replayed or concurrent callback gets False)."""
    with engine.begin() as conn:
        statement = (
            update(oauth_login_sessions)
            .where(oauth_login_sessions.c.session_hash == key, oauth_login_sessions.c.external_login == value)
            .values(external_login=None)
        )
        return conn.execute(statement).rowcount == 1


# -- Backend Services assertion jtis ------------------------------------------------------------------------
def remember_assertion_jti(engine: Engine, client_id: str, jti: str, expires_at: datetime) -> bool:
    """False when this client already used ``jti`` in an assertion that has not expired yet."""
    with engine.begin() as conn:
        return _insert_ignore(
            conn, oauth_assertion_jtis, {"client_id": client_id, "jti": jti, "expires_at": expires_at}
        )


# -- revocation ---------------------------------------------------------------------------------------------
def revoke_token(engine: Engine, jti: str, expires_at: datetime) -> None:
    with engine.begin() as conn:
        _insert_ignore(conn, oauth_revoked_tokens, {"jti": jti, "expires_at": expires_at})


def revoke_grant(engine: Engine, sid: str, now: datetime, expires_at: datetime) -> None:
    """The grant's refresh tokens die with it; its access tokens are refused through the revoked sid."""
    with engine.begin() as conn:
        conn.execute(update(oauth_refresh_tokens).where(oauth_refresh_tokens.c.sid == sid).values(revoked=True))
        _insert_ignore(conn, oauth_revoked_grants, {"sid": sid, "revoked_at": now, "expires_at": expires_at})


def load_revocations(engine: Engine, now: datetime) -> tuple[set[str], set[str]]:
    """(revoked jtis, revoked sids) that can still matter."""
    with engine.connect() as conn:
        jtis = set(
            conn.execute(select(oauth_revoked_tokens.c.jti).where(oauth_revoked_tokens.c.expires_at > now)).scalars()
        )
        sids = set(
            conn.execute(select(oauth_revoked_grants.c.sid).where(oauth_revoked_grants.c.expires_at > now)).scalars()
        )
    return jtis, sids


def prune_expired(engine: Engine, now: datetime) -> None:
    """Housekeeping: rows that can no longer matter."""
    with engine.begin() as conn:
        for table in (oauth_login_sessions, oauth_assertion_jtis, oauth_revoked_tokens, oauth_revoked_grants):
            conn.execute(delete(table).where(table.c.expires_at < now))
        # Used codes stay a while after they expire, so a late replay is still recognised (and revokes its grant).
        conn.execute(delete(oauth_codes).where(oauth_codes.c.expires_at < now - CODE_MEMORY))
        conn.execute(delete(oauth_refresh_tokens).where(oauth_refresh_tokens.c.expires_at < now))
        conn.execute(delete(oauth_launches).where(oauth_launches.c.expires_at < now))

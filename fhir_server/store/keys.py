"""SQL for the signing keys table (only store/ talks SQL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from fhir_server.store import secret_store
from fhir_server.store.tables import signing_keys


def load_keys(engine: Engine) -> list[dict[str, object]]:
    """Every key, newest first, with its private JWK decrypted (store/crypto.py)."""
    with engine.connect() as conn:
        rows = conn.execute(select(signing_keys).order_by(signing_keys.c.created_at.desc())).mappings().all()
    column = signing_keys.c.private_jwk
    return [{**r, "private_jwk": secret_store.open_value(engine, column, r["private_jwk"])} for r in rows]


def signing_kid(engine: Engine) -> str | None:
    """The kid of the newest unretired key (what should sign now): one small query, no decryption."""
    c = signing_keys.c
    with engine.connect() as conn:
        return conn.execute(
            select(c.kid).where(c.retired_at.is_(None)).order_by(c.created_at.desc()).limit(1)
        ).scalar_one_or_none()


def add_key(engine: Engine, kid: str, algorithm: str, private_jwk: str, now: datetime, *, retire_others: bool) -> None:
    private_jwk = secret_store.seal(engine, signing_keys.c.private_jwk, private_jwk) or ""  # before the transaction
    with engine.begin() as conn:
        if retire_others:
            conn.execute(update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=now))
        conn.execute(
            insert(signing_keys).values(
                kid=kid, algorithm=algorithm, private_jwk=private_jwk, created_at=now, retired_at=None
            )
        )

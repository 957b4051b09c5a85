"""SQL for the CDS Hooks tables (only store/ talks SQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from fhir_server.store.cds_tables import cds_clients, cds_feedback


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def add_client(engine: Engine, issuer: str, name: str, jwks_uri: str | None, jwks: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(delete(cds_clients).where(cds_clients.c.issuer == issuer))
        conn.execute(
            insert(cds_clients).values(issuer=issuer, name=name, jwks_uri=jwks_uri, jwks=jwks, created_at=_now())
        )


def get_client(engine: Engine, issuer: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(cds_clients).where(cds_clients.c.issuer == issuer)).mappings().first()
    return dict(row) if row else None


def list_clients(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(cds_clients).order_by(cds_clients.c.issuer)).mappings()]


def remove_client(engine: Engine, issuer: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(delete(cds_clients).where(cds_clients.c.issuer == issuer)).rowcount > 0


def add_feedback(engine: Engine, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(insert(cds_feedback), [{**r, "received_at": _now()} for r in rows])


def feedback_for(engine: Engine, card: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = select(cds_feedback).where(cds_feedback.c.card == card).order_by(cds_feedback.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]

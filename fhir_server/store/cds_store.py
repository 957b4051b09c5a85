"""SQL for the CDS Hooks tables (only store/ talks SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from fhir_server.store.cds_tables import cds_clients, cds_feedback


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def add_client(
    engine: Engine,
    issuer: str,
    name: str,
    jwks_uri: str | None,
    jwks: str | None,
    fhir_servers: Sequence[str] = (),
) -> None:
    """``fhir_servers``: the normalised FHIR bases the client may name as ``fhirServer`` (none: it must prefetch)."""
    servers = orjson.dumps(list(fhir_servers)).decode() if fhir_servers else None
    with engine.begin() as conn:
        conn.execute(delete(cds_clients).where(cds_clients.c.issuer == issuer))
        conn.execute(
            insert(cds_clients).values(
                issuer=issuer, name=name, jwks_uri=jwks_uri, jwks=jwks, fhir_servers=servers, created_at=_now()
            )
        )


def _client(row: Any) -> dict[str, Any]:
    client = dict(row)
    client["fhir_servers"] = orjson.loads(client["fhir_servers"]) if client.get("fhir_servers") else []
    return client


def get_client(engine: Engine, issuer: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(cds_clients).where(cds_clients.c.issuer == issuer)).mappings().first()
    return _client(row) if row else None


def fhir_servers(engine: Engine, issuer: str) -> list[str]:
    """The FHIR bases registered for the client (empty when it is unknown or has none)."""
    client = get_client(engine, issuer)
    return client["fhir_servers"] if client else []


def list_clients(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [_client(r) for r in conn.execute(select(cds_clients).order_by(cds_clients.c.issuer)).mappings()]


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

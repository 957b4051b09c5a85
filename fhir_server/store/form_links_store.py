"""SQL for one-time form links (store/client_request_tables.py ``form_links``; only store/ talks SQL).

``insert_link`` runs in the caller's write transaction (the Task's), so a link exists exactly when its Task does.
Opening a link (``claim``) is one conditional UPDATE: of two browsers presenting the same token at once, one wins.
The token and the recipient are sealed here (store/crypto.py); callers see plain values.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from fhir_server.store import secret_store
from fhir_server.store.client_request_tables import form_links
from fhir_server.store.tables import ehr_registrations

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

Row = dict[str, Any]
_TOKEN, _RECIPIENT = form_links.c.token_sealed, form_links.c.recipient_sealed


def can_seal(session: WriteSession) -> bool:
    """Whether a secret key is configured (a link cannot be stored without one)."""
    return secret_store.keyring(session.conn).configured


def _sealed(conn: Any, column: Any, value: str) -> str:
    """Sealed with the keyring directly: the server checked the key against the database when it started
    (secret_store.check_at_startup), and that check, run from inside this write, would wait for the write's own
    lock on SQLite."""
    return secret_store.keyring(conn).seal(value, secret_store.purpose(column))


def _opened(conn: Any, row: Any) -> Row:
    values = dict(row)
    values["token"] = secret_store.open_value(conn, _TOKEN, values.pop("token_sealed"))
    values["recipient"] = secret_store.open_value(conn, _RECIPIENT, values.pop("recipient_sealed"))
    return values


def registered_ehr(session: WriteSession, issuer: str) -> int | None:
    """The registration id of the EHR whose FHIR base is ``issuer`` (trailing slash ignored), in the write."""
    wanted = {issuer.rstrip("/"), issuer.rstrip("/") + "/"}
    found = session.conn.execute(select(ehr_registrations.c.id).where(ehr_registrations.c.issuer.in_(wanted))).first()
    return int(found[0]) if found else None


def link_exists_for_task(session: WriteSession, task_id: str) -> bool:
    found = session.conn.execute(select(form_links.c.id).where(form_links.c.task_id == task_id).limit(1)).first()
    return found is not None


def insert_link(session: WriteSession, values: Row) -> int:
    """``values``: token_hash, token, recipient and the plain columns; returns the link id."""
    conn = session.conn
    row = {k: v for k, v in values.items() if k not in ("token", "recipient")}
    row["token_sealed"] = _sealed(conn, _TOKEN, values["token"])
    row["recipient_sealed"] = _sealed(conn, _RECIPIENT, values["recipient"])
    row.setdefault("created_at", session.now)
    return int(conn.execute(insert(form_links).values(**row).returning(form_links.c.id)).scalar_one())


def by_hash(engine: Engine, token_hash: str) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(form_links).where(form_links.c.token_hash == token_hash)).mappings().first()
        return _opened(conn, row) if row else None


def by_id(engine: Engine, link_id: int) -> Row | None:
    with engine.connect() as conn:
        row = conn.execute(select(form_links).where(form_links.c.id == link_id)).mappings().first()
        return _opened(conn, row) if row else None


def for_task(engine: Engine, task_id: str) -> list[Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(form_links).where(form_links.c.task_id == task_id).order_by(form_links.c.id))
        return [_opened(conn, r) for r in rows.mappings().all()]


def claim(engine: Engine, link_id: int, token_hash: str, now: datetime) -> bool:
    """Mark the link used, only if this token is still its token and it was not used: True for the one winner."""
    c = form_links.c
    with engine.begin() as conn:
        result = conn.execute(
            update(form_links)
            .where(c.id == link_id, c.token_hash == token_hash, c.used_at.is_(None), c.expires_at > now)
            .values(used_at=now)
        )
        return result.rowcount == 1


def renew_token(engine: Engine, link_id: int, token_hash: str, token: str) -> bool:
    """A fresh token for a link that was opened but whose form was not sent (a reminder carries it): the old token
    stops working at once.  False when the link is gone."""
    with engine.begin() as conn:
        values = {"token_hash": token_hash, "token_sealed": _sealed(conn, _TOKEN, token), "used_at": None}
        return conn.execute(update(form_links).where(form_links.c.id == link_id).values(**values)).rowcount == 1


def count_recent_for_patient(session: WriteSession, patient: str, since: datetime) -> int:
    c = form_links.c
    query = select(func.count()).select_from(form_links).where(c.patient == patient, c.created_at >= since)
    return int(session.conn.execute(query).scalar_one())

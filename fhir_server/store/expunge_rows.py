"""SQL of erasure beside the resources (store/expunge.py): the rows of other tables that hold an erased patient's id
or an erased resource's (the write-back and message outboxes, form links, app and sign-in sessions, launches, the
patient's own user account, subscriptions and their events, CDS feedback on the patient's cards).  Every function
runs on the caller's ``WriteSession``: the erasure is one transaction.  Export files are removed after it commits
(erasure/exports.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, delete, func, select

from fhir_server.store.cds_tables import cds_feedback
from fhir_server.store.client_request_tables import form_links, message_outbox
from fhir_server.store.expunge import Key, chunks
from fhir_server.store.subscription_tables import subscription_events, subscriptions
from fhir_server.store.tables import (
    app_sessions,
    ehr_outbox,
    oauth_codes,
    oauth_launches,
    oauth_login_sessions,
    oauth_refresh_tokens,
    oauth_users,
    supervised_organizations,
)

if TYPE_CHECKING:
    from fhir_server.store.session import WriteSession

LINK_MESSAGES = ("form-link", "form-reminder")  # message_outbox kinds whose subject is a form_links row
# Columns holding JSON that may name a patient (a grant's launch context, a sign-in waiting for a patient).
CONTEXT_COLUMNS = {
    "oauth_codes": (oauth_codes.c.code_hash, oauth_codes.c.context),
    "oauth_refresh_tokens": (oauth_refresh_tokens.c.token_hash, oauth_refresh_tokens.c.context),
    "oauth_login_sessions": (oauth_login_sessions.c.session_hash, oauth_login_sessions.c.pending),
}


def _delete_in(session: WriteSession, column: Column[Any], values: Collection[Any], *more: Any) -> int:
    removed = 0
    for chunk in chunks(sorted(set(values))):
        removed += session.conn.execute(delete(column.table).where(column.in_(list(chunk)), *more)).rowcount
    return removed


# -- the write-back outbox ------------------------------------------------------------------------------------
def pending_deliveries(session: WriteSession, response_ids: Sequence[str]) -> int:
    """Write-backs of these QuestionnaireResponses still to be delivered to an EHR."""
    c = ehr_outbox.c
    pending = 0
    for chunk in chunks(sorted(set(response_ids))):
        query = select(func.count()).where(c.response_id.in_(list(chunk)), c.status == "pending")
        pending += int(session.conn.execute(query).scalar_one())
    return pending


def remove_deliveries(session: WriteSession, response_ids: Sequence[str]) -> int:
    return _delete_in(session, ehr_outbox.c.response_id, response_ids)


# -- subscriptions --------------------------------------------------------------------------------------------
def remove_events_about(session: WriteSession, keys: Collection[Key]) -> int:
    """Notification events whose focus is one of these resources (sent or not: their rows name it)."""
    c = subscription_events.c
    removed = 0
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        grouped.setdefault(resource_type, []).append(resource_id)
    for resource_type, ids in grouped.items():
        removed += _delete_in(session, c.focus_id, ids, c.focus_type == resource_type)
    return removed


def subscription_rows(session: WriteSession) -> list[tuple[str, str, str]]:
    """(id, filters JSON, creator's claims JSON) of every registered subscription: few, read whole."""
    c = subscriptions.c
    return [(row.id, row.filters, row.caller) for row in session.conn.execute(select(c.id, c.filters, c.caller))]


def remove_subscriptions(session: WriteSession, ids: Collection[str]) -> int:
    """The delivery rows of these Subscriptions and their events (the resources go with store/expunge.remove)."""
    removed = _delete_in(session, subscription_events.c.subscription_id, ids)
    return removed + _delete_in(session, subscriptions.c.id, ids)


# -- form links and their messages ----------------------------------------------------------------------------
def remove_links(session: WriteSession, patient: str | None, task_ids: Sequence[str]) -> tuple[int, int]:
    """The form links for this patient or these Tasks, and their messages: (links, messages) removed."""
    c = form_links.c
    found: set[int] = set()
    if patient is not None:
        found |= {row[0] for row in session.conn.execute(select(c.id).where(c.patient == patient))}
    for chunk in chunks(sorted(set(task_ids))):
        found |= {row[0] for row in session.conn.execute(select(c.id).where(c.task_id.in_(list(chunk))))}
    messages = _delete_in(session, message_outbox.c.subject_id, found, message_outbox.c.kind.in_(LINK_MESSAGES))
    return _delete_in(session, c.id, found), messages


# -- sessions, launches and the patient's own sign-in ---------------------------------------------------------
def remove_app_sessions(
    session: WriteSession, patient: str | None, response_ids: Sequence[str], task_ids: Sequence[str]
) -> int:
    """The SMART app's sessions for this patient, or that submitted one of these responses or answer these Tasks."""
    c = app_sessions.c
    removed = session.conn.execute(delete(app_sessions).where(c.patient == patient)).rowcount if patient else 0
    removed += _delete_in(session, c.response_id, response_ids)
    return removed + _delete_in(session, c.task_id, task_ids)


def remove_launches(session: WriteSession, patient: str) -> int:
    return session.conn.execute(delete(oauth_launches).where(oauth_launches.c.patient == patient)).rowcount


def context_rows(session: WriteSession, needle: str) -> dict[str, list[tuple[str, str]]]:
    """Per table of CONTEXT_COLUMNS: (key, JSON) of the rows whose JSON contains ``needle`` (the caller parses)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, (key, column) in CONTEXT_COLUMNS.items():
        query = select(key, column).where(column.contains(needle, autoescape=True))
        found[name] = [(row[0], row[1]) for row in session.conn.execute(query)]
    return found


def remove_context_rows(session: WriteSession, name: str, keys: Collection[str]) -> int:
    return _delete_in(session, CONTEXT_COLUMNS[name][0], keys)


def remove_users(session: WriteSession, fhir_user: str) -> int:
    """The sign-in accounts that *are* this patient (``fhirUser`` Patient/…), with their sessions, codes, refresh
    tokens and supervised organisations.  Returns how many accounts."""
    query = select(oauth_users.c.user_id).where(oauth_users.c.fhir_user == fhir_user)
    users = [row[0] for row in session.conn.execute(query)]
    if not users:
        return 0
    _delete_in(session, oauth_login_sessions.c.user_id, users)
    _delete_in(session, oauth_codes.c.user_id, users)
    _delete_in(session, oauth_refresh_tokens.c.user_id, users)
    _delete_in(session, supervised_organizations.c.user_id, users)
    return _delete_in(session, oauth_users.c.user_id, users)


# -- CDS Hooks feedback ---------------------------------------------------------------------------------------
def feedback_cards(session: WriteSession) -> set[str]:
    """The cards any feedback was given on (a small table: one row per clinician's accept or override)."""
    return {row[0] for row in session.conn.execute(select(cds_feedback.c.card).distinct())}


def remove_feedback(session: WriteSession, cards: Collection[str]) -> int:
    return _delete_in(session, cds_feedback.c.card, cards)

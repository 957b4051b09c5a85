"""The SMART app's server-side sessions (backend for frontend).

The browser holds one opaque value: a cookie with 256 random bits.  Everything else — the pending launch (state,
PKCE verifier, iss), the EHR's tokens, the launch context, the chosen measure or view (and the Flag a CDS card
points at), the CSRF token, the draft answers and the submitted response — stays in the database
(``app_sessions``), keyed by the SHA-256 of that value.  No token is ever put in a URL, a page, localStorage or
sessionStorage.

The launch code uses ``create_session`` / ``update`` / ``rekey``; the form uses ``load_session`` (given the cookie
web/app_cookies.py reads), ``save_draft`` and ``mark_submitted``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_server.store import app_sessions_store as store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now
from fhir_server.store.session import WriteSession

# The __Host- prefix makes the browser refuse the cookie unless it is Secure, Path=/ and has no Domain: nobody on a
# sibling subdomain can plant a session id here (session fixation).
COOKIE_NAME = "__Host-fit-app-session"
ID_BYTES = 32  # 256 random bits

# Columns the launch code may set after creation; the security-relevant ones (hash, CSRF token, submission key,
# response id) change only through the functions below.
LAUNCH_FIELDS = frozenset(
    {
        "launch_state",
        "code_verifier",
        "launch_iss",
        "ehr_id",
        "access_token",
        "refresh_token",
        "token_expires_at",
        "scope",
        "patient",
        "encounter",
        "fhir_user",
        "fhir_context",
        "need_patient_banner",
        "smart_style_url",
        "questionnaire",
        "app_view",
        "app_flag",
        "language",
        "task_id",
    }
)


def hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class AppSession:
    session_hash: str
    created_at: datetime
    expires_at: datetime
    csrf_token: str
    submission_key: str
    launch_state: str | None = None
    code_verifier: str | None = None
    launch_iss: str | None = None
    ehr_id: int | None = None
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None
    scope: str | None = None
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    fhir_context: list[Any] = field(default_factory=list)
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    questionnaire: str | None = None  # canonical url|version
    app_view: str | None = None  # form | clinician: what the launch opens
    app_flag: str | None = None  # the id of the Flag a CDS card's appContext points the clinician view at
    language: str | None = None  # the form's language once chosen (a BCP 47 tag: en, fr, es, ar)
    task_id: str | None = None  # the Task a form opened from a link completes (fhir_server/requests)
    draft: dict[str, Any] = field(default_factory=dict)
    response_id: str | None = None
    submitted_at: datetime | None = None

    @property
    def submitted(self) -> bool:
        return self.response_id is not None

    def csrf_ok(self, presented: str | None) -> bool:
        """Constant-time comparison: the token guards every state-changing request of the form."""
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token.encode())

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AppSession:
        values = dict(row)
        values["fhir_context"] = orjson.loads(values["fhir_context"]) if values.get("fhir_context") else []
        values["draft"] = orjson.loads(values["draft"]) if values.get("draft") else {}
        values["need_patient_banner"] = bool(values.get("need_patient_banner"))
        return cls(**values)


def _column_values(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - LAUNCH_FIELDS
    if unknown:
        raise ValueError(f"not a launch field of an app session: {', '.join(sorted(unknown))}")
    values = dict(fields)
    if "fhir_context" in values:
        values["fhir_context"] = orjson.dumps(values["fhir_context"] or []).decode()
    return values


class AppSessionStore:
    """The app sessions of one server, on ``app.state.app_sessions``."""

    def __init__(self, engine: Database, lifetime_seconds: int) -> None:
        self.engine = engine
        self.lifetime = timedelta(seconds=lifetime_seconds)

    def create_session(self, **fields: Any) -> tuple[str, AppSession]:
        """A new session; returns the id for the cookie (shown nowhere else) and the session."""
        now = utc_now()
        session_id = secrets.token_urlsafe(ID_BYTES)
        values = {
            "session_hash": hash_id(session_id),
            "created_at": now,
            "expires_at": now + self.lifetime,
            "csrf_token": secrets.token_urlsafe(32),
            "submission_key": secrets.token_hex(16),
            "need_patient_banner": False,
            **_column_values(fields),
        }
        # Expired rows go on the way in: no background job needed, and the table stays the size of the live ones.
        store.purge_expired(self.engine, now)
        store.insert_session(self.engine, values)
        return session_id, self.get(values["session_hash"]) or AppSession.from_row(values)

    def get(self, session_hash: str) -> AppSession | None:
        row = store.get_session(self.engine, session_hash, utc_now())
        return AppSession.from_row(row) if row else None

    def load_session(self, session_id: str | None) -> AppSession | None:
        """The unexpired session a cookie's id names, or None (no cookie, unknown id, expired)."""
        if not session_id or len(session_id) > 128:
            return None
        return self.get(hash_id(session_id))

    def update(self, session: AppSession, **fields: Any) -> AppSession | None:
        """Set launch fields (tokens, context, the measure); None when the session has expired meanwhile."""
        if not store.update_session(self.engine, session.session_hash, utc_now(), _column_values(fields)):
            return None
        return self.get(session.session_hash)

    def rekey(self, session: AppSession) -> str | None:
        """A fresh id for the same session (call after the authorization callback); returns it for the cookie."""
        session_id = secrets.token_urlsafe(ID_BYTES)
        if not store.rekey_session(self.engine, session.session_hash, hash_id(session_id), utc_now()):
            return None
        session.session_hash = hash_id(session_id)
        return session_id

    def save_draft(self, session: AppSession, draft: dict[str, Any]) -> bool:
        """False when the session was submitted or expired meanwhile."""
        return store.save_draft(self.engine, session.session_hash, orjson.dumps(draft).decode(), utc_now())

    def mark_submitted(self, session: AppSession, response_id: str, write: WriteSession) -> None:
        """Record the response in the write transaction that stores it (``write``)."""
        store.mark_submitted(write, session.session_hash, response_id, utc_now())
        session.response_id = response_id

    # -- the outbox's TokenSource: write-back uses the launch's own token while its session lives ----------------
    def token_ref(self, session: AppSession) -> str:
        """What an outbox row keeps to find this launch's token later: the session's key, never the token."""
        return session.session_hash

    def token_for(self, ehr: Any, token_ref: str | None) -> str | None:
        """The access token of the launch ``token_ref`` names, if that session still lives, came from this EHR
        (``ehr.id``) and its token has not expired; else None (the worker then uses Backend Services)."""
        session = self.get(token_ref) if token_ref else None
        if session is None or not session.access_token or session.ehr_id != getattr(ehr, "id", None):
            return None
        if session.token_expires_at is not None and session.token_expires_at <= utc_now():
            return None
        return session.access_token

    def end(self, session: AppSession) -> None:
        store.delete_session(self.engine, session.session_hash)


def session_cookie(session_id: str, max_age: int) -> str:
    """The Set-Cookie value.  ``HttpOnly`` (no script reads it), ``Secure; SameSite=None`` (sent from inside the
    EHR's cross-site iframe; browsers drop SameSite=None cookies that are not Secure), ``Partitioned`` (CHIPS:
    browsers that block third-party cookies keep this one, in a jar keyed to the EHR's site, never shared across
    EHRs).

    Secure is set even on plain http: production is https, and on http://localhost or 127.0.0.1 Chromium counts
    the origin as potentially trustworthy and accepts Secure cookies, so development and the browser tests run with
    the production attributes.  Over plain http on any other host the browser refuses the cookie: by design.

    Written out by hand because Starlette supports ``partitioned`` only on Python 3.14+.
    """
    if not session_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError("a session id is URL-safe base64")
    return f"{COOKIE_NAME}={session_id}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"

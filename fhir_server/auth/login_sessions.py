"""The authorization server's login session: a random cookie naming a server-side row that holds the CSRF token,
the signed-in user and the authorization request waiting for login or a patient choice.

The cookie value is never stored (only its digest); signing in replaces both the session id and the CSRF token,
so a session id planted before login is worthless afterwards (no session fixation).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fhir_server.auth.credentials import digest, new_secret
from fhir_server.auth.revocation import utcnow
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database


@dataclass
class LoginSession:
    key: str  # digest of the cookie value
    csrf_token: str
    user_id: str | None
    authenticated_at: datetime | None
    pending: dict[str, Any] | None
    external: str | None = None  # JSON of a sign-in in progress at the external identity provider

    def csrf_matches(self, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(self.csrf_token.encode(), (submitted or "").encode())

    @property
    def auth_time(self) -> int | None:
        return int(self.authenticated_at.replace(tzinfo=UTC).timestamp()) if self.authenticated_at else None


class LoginSessions:
    def __init__(self, engine: Database, lifetime_seconds: int) -> None:
        self.engine = engine
        self.lifetime = timedelta(seconds=lifetime_seconds)

    def load(self, cookie: str | None) -> LoginSession | None:
        if not cookie or len(cookie) > 128:
            return None
        row = oauth_store.get_session(self.engine, digest(cookie), utcnow())
        if row is None:
            return None
        pending = orjson.loads(row["pending"]) if row["pending"] else None
        return LoginSession(
            row["session_hash"],
            row["csrf_token"],
            row["user_id"],
            row["authenticated_at"],
            pending,
            row["external_login"],
        )

    def ensure(self, cookie: str | None) -> tuple[LoginSession, str | None]:
        """The session the cookie names, or a new one with the cookie value to set."""
        session = self.load(cookie)
        if session is not None:
            return session, None
        value = new_secret()
        session = LoginSession(digest(value), new_secret(), None, None, None)
        oauth_store.create_session(
            self.engine,
            {
                "session_hash": session.key,
                "csrf_token": session.csrf_token,
                "user_id": None,
                "authenticated_at": None,
                "pending": None,
                "expires_at": utcnow() + self.lifetime,
            },
        )
        return session, value

    def set_pending(self, session: LoginSession, pending: dict[str, Any] | None) -> None:
        session.pending = pending
        oauth_store.update_session(
            self.engine, session.key, pending=orjson.dumps(pending).decode() if pending is not None else None
        )

    def start_external(self, session: LoginSession, details: dict[str, Any]) -> None:
        """Remembers a sign-in sent to the external identity provider (replacing an earlier one)."""
        session.external = orjson.dumps(details).decode()
        oauth_store.update_session(self.engine, session.key, external_login=session.external)

    def take_external(self, session: LoginSession) -> dict[str, Any] | None:
        """The sign-in in progress at the identity provider, once: it is cleared as it is taken, so a callback
        replayed (or racing in parallel) finds nothing."""
        if session.external is None or not oauth_store.take_external_login(self.engine, session.key, session.external):
            return None
        details, session.external = orjson.loads(session.external), None
        return details if isinstance(details, dict) else None

    def sign_in(self, session: LoginSession, user_id: str) -> str:
        """Binds the user to the session under a fresh id and CSRF token; returns the new cookie value."""
        value, now = new_secret(), utcnow()
        new_key, new_csrf = digest(value), new_secret()
        oauth_store.update_session(
            self.engine,
            session.key,
            session_hash=new_key,
            csrf_token=new_csrf,
            user_id=user_id,
            authenticated_at=now,
            expires_at=now + self.lifetime,
        )
        session.key, session.csrf_token, session.user_id, session.authenticated_at = new_key, new_csrf, user_id, now
        return value

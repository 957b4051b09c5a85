"""Revoked access tokens (by ``jti``) and revoked grants (by ``sid``), consulted by the resource server on every
request.

The check must be cheap, so it reads in-memory sets.  They are re-read from the database at most every
``REFRESH_SECONDS``, which is how a revocation made by another worker process becomes visible (within that
interval); a revocation made in this process is in the sets at once.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from fhir_server.store import oauth_store
from fhir_server.store.engine import Database

REFRESH_SECONDS = 2.0
EXPIRY_MARGIN = timedelta(minutes=2)


def utcnow() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(UTC).replace(tzinfo=None)


class RevocationList:
    def __init__(self, engine: Database, grant_memory_seconds: float = 30 * 24 * 3600) -> None:
        self.engine = engine
        # How long a revoked sid is remembered: as long as any refresh token of the grant could live.
        self.grant_memory = timedelta(seconds=grant_memory_seconds)
        self._reload_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._jtis: frozenset[str] = frozenset()
        self._sids: frozenset[str] = frozenset()
        # Local revocations made since the current reload began, which its query may not have seen.
        self._new_jtis: set[str] = set()
        self._new_sids: set[str] = set()
        self._loaded_at: float | None = None

    def fresh(self) -> bool:
        """Whether ``is_revoked`` would answer from memory now (no database read due)."""
        return self._loaded_at is not None and time.monotonic() - self._loaded_at <= REFRESH_SECONDS

    def is_revoked(self, jti: str | None, sid: str | None) -> bool:
        if self._loaded_at is None or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self._reload()
        return (jti is not None and jti in self._jtis) or (sid is not None and sid in self._sids)

    def _reload(self) -> None:
        # One thread re-reads while the others keep answering from the sets they have (at most ~2 s old); only
        # the very first check waits, so nothing is ever allowed before the database was read once.
        if not self._reload_lock.acquire(blocking=self._loaded_at is None):
            return
        try:
            if self._loaded_at is not None and time.monotonic() - self._loaded_at <= REFRESH_SECONDS:
                return
            started = time.monotonic()
            with self._state_lock:
                self._new_jtis, self._new_sids = set(), set()
            jtis, sids = oauth_store.load_revocations(self.engine, utcnow())
            with self._state_lock:
                self._jtis = frozenset(jtis | self._new_jtis)
                self._sids = frozenset(sids | self._new_sids)
            self._loaded_at = started
        finally:
            self._reload_lock.release()

    def revoke_token(self, jti: str, exp: float | int | datetime) -> None:
        """An access token is refused until ``exp`` (its own expiry: after that it is refused anyway)."""
        expires_at = exp if isinstance(exp, datetime) else datetime.fromtimestamp(float(exp), UTC).replace(tzinfo=None)
        # Validation allows some clock skew past ``exp``; remember the jti a little longer than that.
        oauth_store.revoke_token(self.engine, jti, expires_at + EXPIRY_MARGIN)
        with self._state_lock:
            self._jtis = self._jtis | {jti}
            self._new_jtis.add(jti)

    def revoke_grant(self, sid: str) -> None:
        """Every token of the grant: its refresh tokens in the database, its access tokens through ``sid``."""
        now = utcnow()
        oauth_store.revoke_grant(self.engine, sid, now, now + self.grant_memory)
        with self._state_lock:
            self._sids = self._sids | {sid}
            self._new_sids.add(sid)

"""Sign-in throttling (docs/security.md: over a rate limit → 429 ``throttled`` with Retry-After).

Password guesses are limited per username (someone guessing one account's password) and per client address
(someone trying many accounts), within a sliding window.  Counts live in the database (store/login_failures.py)
so the limits hold across worker processes and restarts.  Each attempt is recorded before its password is checked
and stays recorded as a failure unless it succeeds; a success forgets the user's failures (not the address's: a
guesser holding one valid account must not be able to reset the address limit with it).  Attempts refused because
of the limit are not recorded, so Retry-After is the true moment the oldest counted failure leaves the window.

Keys are SHA-256 digests: neither usernames nor addresses are stored by this table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from fhir_server.auth.credentials import digest
from fhir_server.auth.revocation import utcnow
from fhir_server.store import login_failures
from fhir_server.store.engine import Database

PRUNE_INTERVAL = 300.0


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    user_key: str
    row_ids: tuple[int, ...]


class LoginThrottle:
    def __init__(self, engine: Database, *, per_user: int, per_address: int, window_seconds: int) -> None:
        self.engine = engine
        self.limits = {"user": max(1, per_user), "address": max(1, per_address)}
        self.window = timedelta(seconds=max(1, window_seconds))
        self._pruned_at = 0.0

    def begin(self, username: str, address: str | None) -> Attempt:
        """Records an attempt for ``username`` from ``address``; raises Throttled when either is over its limit
        (the attempt is then not recorded, and the password must not be checked)."""
        keys = {"user": digest(f"user\0{username}")}
        if address:
            keys["address"] = digest(f"address\0{address}")
        now = utcnow()
        ids = login_failures.record(self.engine, list(keys.values()), now)
        since = now - self.window
        counts = login_failures.count_since(self.engine, list(keys.values()), since)
        over = [kind for kind, key in keys.items() if counts[key] > self.limits[kind]]
        if over:
            login_failures.forget(self.engine, ids=ids)
            raise Throttled(max(self._retry_after(keys[kind], self.limits[kind], since, ids, now) for kind in over))
        self._maybe_prune(now)
        return Attempt(keys["user"], tuple(ids))

    def succeeded(self, attempt: Attempt) -> None:
        login_failures.forget(self.engine, ids=attempt.row_ids, key=attempt.user_key)

    def _retry_after(self, key: str, limit: int, since: datetime, own: list[int], now: datetime) -> int:
        """Seconds until fewer than ``limit`` earlier attempts remain in the window (so one more may be made)."""
        times = login_failures.times_since(self.engine, key, since, own)
        if len(times) < limit:  # a concurrent success or prune freed room meanwhile
            return 1
        frees_at = times[len(times) - limit] + self.window
        return max(1, math.ceil((frees_at - now).total_seconds()))

    def _maybe_prune(self, now: datetime) -> None:
        # Rows of keys never tried again (a spray of made-up usernames) would otherwise stay forever.
        if time.monotonic() - self._pruned_at > PRUNE_INTERVAL:
            self._pruned_at = time.monotonic()
            login_failures.prune(self.engine, now - self.window)

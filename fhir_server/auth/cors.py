"""Browser origins registered with clients: the only origins that get CORS headers (docs/security.md)."""

from __future__ import annotations

import threading
import time

import orjson

from fhir_server.store import oauth_store
from fhir_server.store.engine import Database

REFRESH_SECONDS = 5.0  # a newly registered client's origin is honoured within this long


class RegisteredOrigins:
    def __init__(self, engine: Database) -> None:
        self.engine = engine
        self._origins: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def allows(self, origin: str) -> bool:
        if self._loaded_at is None or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            with self._lock:
                if self._loaded_at is None or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
                    origins: set[str] = set()
                    for text in oauth_store.client_origins(self.engine):
                        origins.update(str(o) for o in orjson.loads(text))
                    self._origins, self._loaded_at = frozenset(origins), time.monotonic()
        return origin in self._origins

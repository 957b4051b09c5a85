"""The authorization server's token-signing keys: created on first use, rotated with ``fhir-server keys rotate``.

Keys live in the database so every worker process signs and verifies with the same set.  The newest unretired key
signs; keys retired less than ``RETIRED_KEY_GRACE`` ago stay in the JWKS, so tokens they signed verify until they
expire.  A token with an unknown ``kid`` makes the store re-read the table (at most once per ``RELOAD_INTERVAL``),
which is how a rotation in another process becomes visible to verification.  Signing looks at which key should sign
at most once per ``SIGNING_CHECK_INTERVAL``: without it, a server instance that started before a rotation made
elsewhere (``fhir-server keys rotate``, another machine) would go on signing with the retired key, whose tokens every
instance refuses once its grace period is over.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_server.store import keys as key_table
from fhir_server.store.engine import Database

SIGNING_ALGORITHM = "RS384"  # SMART's recommended algorithms are RS384 and ES384
RETIRED_KEY_GRACE = timedelta(hours=24)
RELOAD_INTERVAL = 5.0
SIGNING_CHECK_INTERVAL = 1.0  # the bound on signing with a key retired elsewhere (docs/architecture.md)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def generate_key(algorithm: str = SIGNING_ALGORITHM) -> RSAKey | ECKey:
    kid = secrets.token_urlsafe(12)
    parameters = {"kid": kid, "alg": algorithm, "use": "sig"}
    if algorithm.startswith("ES"):
        curve = {"ES256": "P-256", "ES384": "P-384"}[algorithm]
        return ECKey.generate_key(curve, parameters=parameters, private=True)
    return RSAKey.generate_key(2048, parameters=parameters, private=True)


class KeyStore:
    def __init__(self, engine: Database) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._signing: RSAKey | ECKey | None = None
        self._published: KeySet = KeySet([])
        self._loaded_at = 0.0
        self._signing_checked_at = 0.0

    def _load(self) -> None:
        rows = key_table.load_keys(self.engine)
        now = _utcnow()
        signing, published = None, []
        for row in rows:
            retired = row["retired_at"]
            if retired is not None and now - retired > RETIRED_KEY_GRACE:  # type: ignore[operator]
                continue
            key = _import(str(row["private_jwk"]))
            published.append(key)
            if retired is None and signing is None:
                signing = key
        self._signing, self._published, self._loaded_at = signing, KeySet(published), time.monotonic()

    def _ensure(self) -> None:
        if self._signing is not None:
            return
        with self._lock:
            if self._signing is None:
                self._load()
            if self._signing is None:  # the first start: make one
                self.rotate()

    def rotate(self, algorithm: str = SIGNING_ALGORITHM) -> str:
        """A new signing key; the previous ones stay published for the grace period.  Returns the new kid."""
        key = generate_key(algorithm)
        key_table.add_key(
            self.engine,
            key.kid or "",
            algorithm,
            orjson.dumps(key.as_dict(private=True)).decode(),
            _utcnow(),
            retire_others=True,
        )
        self._load()
        return key.kid or ""

    def sign(self, claims: dict[str, Any]) -> str:
        self._ensure()
        self._follow_rotation()
        key = self._signing
        assert key is not None
        algorithm = key.alg or SIGNING_ALGORITHM
        header = {"alg": algorithm, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[algorithm])

    def _follow_rotation(self) -> None:
        """Reload when another process has rotated the signing key since this one loaded the keys."""
        if time.monotonic() - self._signing_checked_at < SIGNING_CHECK_INTERVAL:
            return
        current = key_table.signing_kid(self.engine)
        with self._lock:
            self._signing_checked_at = time.monotonic()
            if current is not None and self._signing is not None and current != self._signing.kid:
                self._load()

    def verification_keys(self, kid: str | None = None) -> KeySet:
        """The published keys; re-read from the database when ``kid`` is not among them (a rotation elsewhere)."""
        self._ensure()
        if kid and not any(k.kid == kid for k in self._published.keys):
            with self._lock:
                if time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
                    self._load()
        return self._published

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document (never the private parts)."""
        self._ensure()
        return {"keys": [k.as_dict(private=False) for k in self._published.keys]}


def _import(text: str) -> RSAKey | ECKey:
    data = orjson.loads(text)
    return ECKey.import_key(data) if data.get("kty") == "EC" else RSAKey.import_key(data)

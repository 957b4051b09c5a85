"""The resource server's token check: ``Authorization: Bearer <JWT>`` → a ``Caller``, or a TokenError.

Tokens are accepted from this server's own authorization server (keys from the KeyStore) and from the
authorization servers listed in ``FHIR_SERVER_TRUSTED_ISSUERS`` (an EHR's: keys fetched from its ``jwks_uri``
over HTTPS, cached, and re-fetched when a token names a key that is not in the cache, at most once per
``JWKS_REFETCH_SECONDS``).  Revoked tokens and grants are refused (auth/revocation.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.auth.caller import Caller
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import TokenError, unverified_issuer, verify_access_token
from fhir_server.config import Settings
from fhir_server.outbound import OUTBOUND, OutboundError

JWKS_TTL_SECONDS = 3600
JWKS_REFETCH_SECONDS = 30
JWKS_MAX_BYTES = 64 * 1024
VERIFIED_CACHE_SIZE = 10_000
CLOCK_LEEWAY = 30  # as tokens.py allows on exp


class Revocations(Protocol):
    def is_revoked(self, jti: str | None, sid: str | None) -> bool: ...

    def fresh(self) -> bool: ...


class RemoteKeys:
    """An external issuer's JWKS, cached."""

    def __init__(self, jwks_uri: str) -> None:
        self.jwks_uri = jwks_uri
        self._keys = KeySet([])
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, kid: str | None) -> KeySet:
        known = any(k.kid == kid for k in self._keys.keys)
        age = time.monotonic() - self._fetched_at
        if (not known and age > JWKS_REFETCH_SECONDS) or age > JWKS_TTL_SECONDS:
            with self._lock:
                self._fetch()
        return self._keys

    def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            status, document = OUTBOUND.get_json(self.jwks_uri, timeout=5.0, max_bytes=JWKS_MAX_BYTES)
            if status != 200:
                raise ValueError(f"status {status}")
            self._keys = KeySet.import_key_set(document)
        except (OutboundError, ValueError, TypeError, KeyError, JoseError):
            # Keep the keys we had; the token in hand fails with "not signed with a key this server knows".
            return


class BearerAuthenticator:
    def __init__(self, settings: Settings, keys: KeyStore, revocations: Revocations | None) -> None:
        self.keys = keys
        self.revocations = revocations
        self.trusted: dict[str, RemoteKeys] = {}
        # Authorization header → ((issuer, audiences) it was verified for, the caller); bounded, oldest dropped
        self._verified: dict[str, tuple[tuple[str, tuple[str, ...]], Caller]] = {}
        self._cache_lock = threading.Lock()
        for entry in settings.trusted_issuers:
            if entry.get("issuer") and entry.get("jwks_uri"):
                self.trusted[entry["issuer"]] = RemoteKeys(entry["jwks_uri"])

    def cached(self, authorization: str | None, *, own_issuer: str, audiences: list[str]) -> Caller | None:
        """The caller of a token verified earlier for the same server, still unexpired and not revoked — answered
        from memory (no signature check, no thread hop); None when the full check is needed.  A client sends the
        same token with every request for its whole lifetime, so this is the common case."""
        if not authorization or self.revocations is None or not self.revocations.fresh():
            return None
        entry = self._verified.get(authorization)
        if entry is None or entry[0] != (own_issuer, tuple(audiences)):
            return None
        caller = entry[1]
        if caller.claims.get("exp", 0) + CLOCK_LEEWAY < time.time():
            return None
        if self.revocations.is_revoked(caller.token_id, caller.grant_id):
            return None  # the full check says why
        return caller

    def authenticate(self, authorization: str | None, *, own_issuer: str, audiences: list[str]) -> Caller:
        caller = self._authenticate(authorization, own_issuer=own_issuer, audiences=audiences)
        if authorization:
            with self._cache_lock:  # writers are thread-pool threads; readers need no lock (single dict reads)
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))  # the oldest: insertion order
                self._verified[authorization] = ((own_issuer, tuple(audiences)), caller)
        return caller

    def _authenticate(self, authorization: str | None, *, own_issuer: str, audiences: list[str]) -> Caller:
        token = _bearer(authorization)
        issuer = unverified_issuer(token)
        if issuer == own_issuer:
            claims = verify_access_token(token, self.keys.verification_keys, issuer=own_issuer, audience=audiences)
        elif issuer in self.trusted:
            claims = verify_access_token(token, self.trusted[issuer], issuer=issuer, audience=audiences)
        else:
            raise TokenError("login", "The token was issued by an authorization server this server does not trust")
        _require_claims(claims)
        if self.revocations is not None and self.revocations.is_revoked(claims.get("jti"), claims.get("sid")):
            raise TokenError("login", "The token has been revoked")
        return Caller.from_claims(claims)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("login", "This endpoint needs an access token: send Authorization: Bearer <token>")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("login", "The Authorization header must be 'Bearer <token>'")
    if len(token) > 16_384:
        raise TokenError("login", "The bearer token is too long")
    return token.strip()


def _require_claims(claims: dict[str, Any]) -> None:
    if not isinstance(claims.get("scope"), str | list):
        raise TokenError("login", "The token carries no scope")

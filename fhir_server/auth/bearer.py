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

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.auth.caller import Caller
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import TokenError, unverified_issuer, verify_access_token
from fhir_server.config import Settings

JWKS_TTL_SECONDS = 3600
JWKS_REFETCH_SECONDS = 30


class Revocations(Protocol):
    def is_revoked(self, jti: str | None, sid: str | None) -> bool: ...


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
            response = httpx.get(self.jwks_uri, timeout=5.0)
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError):
            # Keep the keys we had; the token in hand fails with "not signed with a key this server knows".
            return


class BearerAuthenticator:
    def __init__(self, settings: Settings, keys: KeyStore, revocations: Revocations | None) -> None:
        self.keys = keys
        self.revocations = revocations
        self.trusted: dict[str, RemoteKeys] = {}
        for entry in settings.trusted_issuers:
            if entry.get("issuer") and entry.get("jwks_uri"):
                self.trusted[entry["issuer"]] = RemoteKeys(entry["jwks_uri"])

    def authenticate(self, authorization: str | None, *, own_issuer: str, audiences: list[str]) -> Caller:
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

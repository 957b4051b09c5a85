"""``private_key_jwt`` client authentication (RFC 7523 §2.2, SMART Backend Services).

The rules (docs/security.md): the assertion is signed with RS384 or ES384 by a key the client registered (its JWKS, or
its jwks_url), or by a key fetched from the header's ``jku`` only when that URL is the client's registered
jwks_url or on FHIR_SERVER_JKU_ALLOW_LIST; ``iss`` = ``sub`` = client_id; ``aud`` = this token endpoint;
``exp`` at most five minutes ahead; a ``jti`` is never accepted twice while its assertion could still be valid.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_server.auth.models import Client
from fhir_server.auth.tokens import signing_key
from fhir_server.outbound import OUTBOUND, OutboundError
from fhir_server.store import oauth_store

if TYPE_CHECKING:
    from fhir_server.auth.oauth_request import FormRequest
    from fhir_server.auth.server import SmartAuthorizationServer

ALGORITHMS = {"RS384": RSAKey, "ES384": ECKey}
MAX_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes in the future
CLOCK_SKEW = 15
JWKS_MAX_BYTES = 64 * 1024
JWKS_CACHE_SECONDS = 300
JWKS_REFETCH_SECONDS = 10  # a kid missing from a cached set triggers a re-fetch, at most this often


class RemoteKeySets:
    """JWKS documents fetched over HTTP (a client's jwks_url or an allowed jku), cached briefly."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._cache: dict[str, tuple[float, KeySet]] = {}
        self._lock = threading.Lock()

    def get(self, url: str, kid: str | None) -> KeySet:
        with self._lock:
            cached = self._cache.get(url)
        age = time.monotonic() - cached[0] if cached else float("inf")
        known = cached is not None and (kid is None or _find(cached[1], kid) is not None)
        if cached and age < JWKS_CACHE_SECONDS and (known or age < JWKS_REFETCH_SECONDS):
            return cached[1]
        keys = self._fetch(url)
        with self._lock:
            self._cache[url] = (time.monotonic(), keys)
        return keys

    def _fetch(self, url: str) -> KeySet:
        try:
            status, document = OUTBOUND.get_json(url, timeout=self.timeout, max_bytes=JWKS_MAX_BYTES)
            if status != 200:
                raise ValueError(f"status {status}")
            return KeySet.import_key_set(document)
        except (OutboundError, ValueError, TypeError, KeyError, JoseError):
            raise InvalidClientError(description="The client's JWKS could not be fetched or read") from None


def _find(keys: KeySet, kid: str) -> Any:
    return next((k for k in keys.keys if k.kid == kid), None)


class PrivateKeyJwt(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: SmartAuthorizationServer, remote: RemoteKeySets | None = None) -> None:
        super().__init__(validate_jti=True, leeway=CLOCK_SKEW)
        self.server = server
        self.remote = remote or RemoteKeySets()

    def __call__(self, query_client: Any, request: FormRequest) -> Client | None:
        data = request.form
        assertion = data.get("client_assertion")
        if not assertion:
            return None
        if data.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClientError(description=f"client_assertion_type must be {ASSERTION_TYPE}")
        headers, claims = self.extract_assertion(assertion)
        algorithm = headers.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidClientError(description="The client assertion must be signed with RS384 or ES384")
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or claims.get("iss") != client_id:
            raise InvalidClientError(description="The client assertion needs iss and sub both set to the client_id")
        client = query_client(client_id)
        if client is None:
            raise InvalidClientError(description="The client does not exist on this server")
        if client.auth_method != self.CLIENT_AUTH_METHOD:
            raise InvalidClientError(description="This client does not authenticate with private_key_jwt")
        key = self.resolve_key(client, headers, algorithm)
        try:
            verified = jwt.decode(assertion, key, algorithms=[algorithm]).claims
        except (JoseError, ValueError):
            raise InvalidClientError(description="The client assertion signature does not verify") from None
        self.check_claims(verified, client, request)
        request.client = client
        return self.authenticate_client(client)

    def resolve_key(self, client: Client, headers: dict[str, Any], algorithm: str) -> RSAKey | ECKey:
        """The client's key named by ``kid``; without a ``kid``, its one key that fits the algorithm (as for every
        JWT this server verifies: tokens.signing_key).  A key missing from a cached JWKS re-fetches it once."""
        kid, jku = headers.get("kid"), headers.get("jku")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise InvalidClientError(description="The client assertion's kid must be a non-empty string")
        if jku is not None:
            allowed = {client.jwks_url, *self.server.settings.jku_allow_list} - {None}
            if jku not in allowed:
                raise InvalidClientError(description="The jku is neither the client's jwks_url nor on the allow-list")
            key = signing_key(self.remote.get(jku, kid), kid, algorithm)
        else:
            key = signing_key(KeySet.import_key_set(client.jwks), kid, algorithm) if client.jwks else None
            if key is None and client.jwks_url:
                key = signing_key(self.remote.get(client.jwks_url, kid), kid, algorithm)
        if key is None:
            raise InvalidClientError(
                description="The assertion's kid is not a registered key of this client"
                if kid
                else "The assertion has no kid and the client's keys do not hold exactly one key for its algorithm"
            )
        expected = ALGORITHMS[algorithm]
        if not isinstance(key, expected) or (isinstance(key, ECKey) and key.curve_name != "P-384"):
            raise InvalidClientError(description=f"The key named by kid cannot verify {algorithm}")
        return key

    def check_claims(self, claims: dict[str, Any], client: Client, request: FormRequest) -> None:
        now = int(time.time())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=CLOCK_SKEW,
            iss={"essential": True, "value": client.client_id},
            sub={"essential": True, "value": client.client_id},
            aud={"essential": True, "values": [request.site.token_endpoint, request.uri.split("?", 1)[0]]},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as error:
            raise InvalidClientError(description=f"Client assertion: {error.description or error.error}") from None
        exp = claims["exp"]
        if exp > now + MAX_LIFETIME + CLOCK_SKEW:
            raise InvalidClientError(description="The client assertion's exp is more than five minutes ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise InvalidClientError(description="The client assertion's jti must be a string of 1 to 255 characters")
        if not self.validate_jti({**claims, "sub": client.client_id}, jti):
            raise InvalidClientError(description="This client assertion jti was used before")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        # Remembered until the assertion could no longer pass the exp check anyway.
        expires_at = datetime.fromtimestamp(claims["exp"] + CLOCK_SKEW, UTC).replace(tzinfo=None)
        return oauth_store.remember_assertion_jti(self.server.engine, claims["sub"], jti, expires_at)

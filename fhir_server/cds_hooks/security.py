"""CDS Hooks 2.0 §Trusting CDS Clients: every service call carries ``Authorization: Bearer <JWT>`` signed by the
EHR.  The issuer must be registered (``fhir-server cds-clients add``), the key must come from its registered JWKS
(or JWKS URL; a ``jku`` header is honoured only when it is that URL), ``aud`` is the service's URL, ``exp`` at
most five minutes ahead, and a ``jti`` is never accepted twice while it is valid.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from joserfc.jwk import KeySet

from fhir_server.auth.bearer import RemoteKeys
from fhir_server.auth.tokens import TokenError, unverified_header, unverified_issuer, verify_access_token
from fhir_server.store import cds_store
from fhir_server.store.engine import Database

MAX_LIFETIME_SECONDS = 300 + 30  # five minutes, plus the clock leeway tokens.py allows


class CdsClientVerifier:
    def __init__(self, engine: Database) -> None:
        self.engine = engine
        self._remote: dict[str, RemoteKeys] = {}
        self._seen: dict[str, float] = {}  # jti → exp
        self._lock = threading.Lock()

    def verify(self, authorization: str | None, audiences: list[str]) -> dict[str, Any]:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise TokenError("login", "CDS Hooks requests must carry the EHR's signed JWT: Authorization: Bearer <jwt>")
        token = authorization[7:].strip()
        issuer = unverified_issuer(token)
        client = cds_store.get_client(self.engine, issuer) if issuer else None
        if client is None:
            raise TokenError("login", "The JWT's issuer is not a registered CDS client of this service")
        header = unverified_header(token)
        if header.get("jku") and header["jku"] != client["jwks_uri"]:
            raise TokenError("login", "The JWT's jku is not the client's registered JWKS URL")
        claims = verify_access_token(token, self._keys(client), issuer=client["issuer"], audience=audiences)
        if claims["exp"] - time.time() > MAX_LIFETIME_SECONDS:
            raise TokenError("login", "The JWT expires more than five minutes from now")
        self._once(claims.get("jti"), claims["exp"])
        return claims

    def _keys(self, client: dict[str, Any]) -> Any:
        if client.get("jwks"):
            keys = KeySet.import_key_set(orjson.loads(client["jwks"]))
            return lambda _kid: keys
        uri = client["jwks_uri"]
        with self._lock:
            return self._remote.setdefault(uri, RemoteKeys(uri))

    def _once(self, jti: Any, exp: float) -> None:
        if not isinstance(jti, str) or not jti:
            raise TokenError("login", "The JWT has no jti")
        now = time.time()
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if v > now - 60}
            if jti in self._seen:
                raise TokenError("login", "This JWT was already used (jti replay)")
            self._seen[jti] = exp

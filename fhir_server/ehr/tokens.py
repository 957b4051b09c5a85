"""Access tokens for writing to an EHR.

First choice is the token of the launch that produced the response (the clinician's session, whose grant the EHR
shows in its audit); the SMART launch's session store provides it through ``TokenSource``.  When there is none, or
the EHR refuses it (expired, or it cannot write), the worker uses a SMART Backend Services token for that EHR:
``client_credentials`` with a ``private_key_jwt`` assertion signed by this server's key (the EHR knows our public
key from /auth/jwks), cached until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_server.auth.keys import KeyStore
from fhir_server.ehr.client import DeliveryError, EhrHttp, failure
from fhir_server.ehr.registry import EhrRegistration

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 240  # seconds; Backend Services allows at most 300
EARLY_REFRESH = 30  # seconds before expiry a cached token is replaced
DISCOVERY_TTL = 3600.0


class TokenSource(Protocol):
    """The launch session's token for ``token_ref`` (opaque, from the outbox row), or None when that session has
    ended or kept no token.  Implemented by the SMART launch's session store."""

    def token_for(self, ehr: EhrRegistration, token_ref: str | None) -> str | None: ...


class NoLaunchTokens:
    """Until launch sessions keep tokens: every delivery uses the Backend Services token."""

    def token_for(self, ehr: EhrRegistration, token_ref: str | None) -> str | None:
        return None


@dataclass
class _Cached:
    value: Any
    until: float  # time.monotonic()


class SmartDiscovery:
    """``{iss}/.well-known/smart-configuration``, cached per EHR for an hour."""

    def __init__(self, http: EhrHttp) -> None:
        self.http = http
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def configuration(self, ehr: EhrRegistration) -> dict[str, Any]:
        with self._lock:
            cached = self._cache.get(ehr.issuer)
        if cached is not None and cached.until > time.monotonic():
            return cached.value
        url = f"{ehr.issuer}/.well-known/smart-configuration"
        response = self.http.request(
            ehr.id, ehr.max_requests_per_second, "GET", url, headers={"Accept": "application/json"}
        )
        if response.status_code != 200:
            raise failure(response, "the EHR's SMART configuration")
        try:
            document = response.json()
        except ValueError:
            raise DeliveryError("the EHR's SMART configuration is not JSON", retryable=True) from None
        if not isinstance(document, dict) or not isinstance(document.get("token_endpoint"), str):
            raise DeliveryError("the EHR's SMART configuration names no token endpoint", retryable=False)
        with self._lock:
            self._cache[ehr.issuer] = _Cached(document, time.monotonic() + DISCOVERY_TTL)
        return document


class BackendServicesTokens:
    def __init__(self, keys: KeyStore, http: EhrHttp, discovery: SmartDiscovery) -> None:
        self.keys = keys
        self.http = http
        self.discovery = discovery
        self._cache: dict[tuple[int, str], _Cached] = {}
        self._lock = threading.Lock()

    def token_for(self, ehr: EhrRegistration) -> str | None:
        """A token for the EHR's backend client, or None when none is configured."""
        if not ehr.backend_client_id:
            return None
        key = (ehr.id, ehr.backend_client_id)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached.until > time.monotonic():
            return str(cached.value)
        token, lifetime = self._request(ehr, ehr.backend_client_id)
        with self._lock:
            self._cache[key] = _Cached(token, time.monotonic() + max(0.0, lifetime - EARLY_REFRESH))
        return token

    def forget(self, ehr: EhrRegistration) -> None:
        """After the EHR refused a cached token (revoked early): the next call asks for a new one."""
        with self._lock:
            self._cache.pop((ehr.id, ehr.backend_client_id or ""), None)

    def _request(self, ehr: EhrRegistration, client_id: str) -> tuple[str, float]:
        config = self.discovery.configuration(ehr)
        endpoint = config["token_endpoint"]
        form = {
            "grant_type": "client_credentials",
            "scope": backend_scope(ehr, config),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self.keys, client_id, endpoint),
        }
        response = self.http.request(
            ehr.id,
            ehr.max_requests_per_second,
            "POST",
            endpoint,
            form=form,
            headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            error = failure(response, "the EHR's token endpoint")
            # invalid_client / unauthorized_client / invalid_scope will not change by themselves.
            error.retryable = response.status_code >= 500 or response.status_code == 429
            raise error
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise DeliveryError("the EHR's token endpoint answered without an access token", retryable=True) from None
        if not isinstance(token, str) or not token:
            raise DeliveryError("the EHR's token endpoint answered without an access token", retryable=True)
        return token, lifetime


def client_assertion(keys: KeyStore, client_id: str, token_endpoint: str) -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523), signed with this server's current key; its ``kid`` is
    in our /auth/jwks, where the EHR looks it up.  Short-lived and never reused (a fresh ``jti`` each time)."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    return keys.sign(claims)


def client_authentication(
    ehr: EhrRegistration, keys: KeyStore, token_endpoint: str
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """How the app's client (``ehr.client_id``) authenticates at the EHR's token endpoint, per its registered
    method: form fields to add to the token request, and HTTP Basic credentials for client_secret_basic."""
    if ehr.auth_method == "client_secret_basic":
        return {}, (ehr.client_id, ehr.client_secret or "")
    if ehr.auth_method == "private_key_jwt":
        assertion = client_assertion(keys, ehr.client_id, token_endpoint)
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, None
    return {"client_id": ehr.client_id}, None  # a public client: PKCE protects the code exchange


def backend_scope(ehr: EhrRegistration, config: dict[str, Any]) -> str:
    """The registration's ``system/`` scopes when it lists any; else read, write and search on each type written
    back (search: an EHR without conditional writes is searched for earlier copies before each write), in the EHR's
    scope syntax (SMART v2 ``.crus`` when it announces permission-v2, else v1 ``.read``/``.write``)."""
    listed = [s for s in ehr.scope.split() if s.startswith("system/")]
    if listed:
        return " ".join(listed)
    capabilities = config.get("capabilities") or []
    if "permission-v2" in capabilities:
        return " ".join(f"system/{t}.crus" for t in ehr.resource_types)
    return " ".join(f"system/{t}.read system/{t}.write" for t in ehr.resource_types)

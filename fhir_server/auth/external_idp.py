"""An external OpenID Connect identity provider, as this server uses it for sign-in (a relying party).

What it does over HTTP: reads the provider's metadata from ``{issuer}/.well-known/openid-configuration`` (OpenID
Connect Discovery 1.0; cached, and its ``issuer`` must be exactly the configured one, §4.3), builds the
authorization request (code flow with PKCE S256, ``state`` and ``nonce``), redeems the code at the token endpoint
(client_secret_basic, client_secret_post, or private_key_jwt signed with this server's own key) and verifies the
id_token against the provider's JWKS (auth/id_tokens.py).  Every failure is an IdpError with a message for the
sign-in page; nothing here is logged, so no code, token or claim reaches the logs.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.common.security import is_secure_transport

from fhir_server.auth.bearer import RemoteKeys
from fhir_server.auth.id_tokens import ASYMMETRIC, IdTokenError, verify_id_token
from fhir_server.auth.keys import KeyStore
from fhir_server.config import Settings
from fhir_server.outbound import OUTBOUND, OutboundError

DISCOVERY_TTL = 3600.0
DISCOVERY_RETRY = 10.0  # after a failed discovery, ask again no sooner than this
HTTP_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
ASSERTION_LIFETIME = 60
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


class IdpError(Exception):
    """A sign-in through the provider that cannot complete; ``status`` is the HTTP status of the page."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IdpConfig:
    issuer: str
    client_id: str
    client_secret: str
    token_auth_method: str
    scopes: str
    user_claim: str
    display_name: str
    algorithms: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> IdpConfig | None:
        """None when no provider is configured; ValueError (at start-up) when the configuration cannot work."""
        if not settings.oidc_issuer:
            return None
        issuer = settings.oidc_issuer
        if not is_secure_transport(issuer) or urlsplit(issuer).query or urlsplit(issuer).fragment:
            raise ValueError("FHIR_SERVER_OIDC_ISSUER must be an https URL (http only for localhost)")
        if not settings.oidc_client_id:
            raise ValueError("FHIR_SERVER_OIDC_CLIENT_ID is required with FHIR_SERVER_OIDC_ISSUER")
        method = settings.oidc_token_auth_method
        if method not in AUTH_METHODS:
            raise ValueError(f"FHIR_SERVER_OIDC_TOKEN_AUTH_METHOD must be one of {', '.join(AUTH_METHODS)}")
        if method != "private_key_jwt" and not settings.oidc_client_secret:
            raise ValueError(f"FHIR_SERVER_OIDC_CLIENT_SECRET is required with {method}")
        if "openid" not in settings.oidc_scopes.split():
            raise ValueError("FHIR_SERVER_OIDC_SCOPES must include openid")
        if settings.oidc_user_claim not in ("preferred_username", "sub", "email"):
            raise ValueError("FHIR_SERVER_OIDC_USER_CLAIM must be preferred_username, sub or email")
        algorithms = tuple(a for a in settings.oidc_id_token_algorithms if a in ASYMMETRIC)
        if not algorithms or len(algorithms) != len(settings.oidc_id_token_algorithms):
            raise ValueError("FHIR_SERVER_OIDC_ID_TOKEN_ALGORITHMS must list asymmetric algorithms only (RS256, ...)")
        return cls(
            issuer=issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            token_auth_method=method,
            scopes=" ".join(settings.oidc_scopes.split()),
            user_claim=settings.oidc_user_claim,
            display_name=settings.oidc_display_name or urlsplit(issuer).netloc,
            algorithms=algorithms,
        )


@dataclass(frozen=True)
class ProviderMetadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class ExternalIdentityProvider:
    def __init__(self, config: IdpConfig, keys: KeyStore) -> None:
        self.config = config
        self.keys = keys  # signs private_key_jwt client assertions
        self._metadata: ProviderMetadata | None = None
        self._jwks: RemoteKeys | None = None
        self._fetched_at = 0.0
        self._failed_at = -DISCOVERY_RETRY
        self._lock = threading.Lock()

    # -- discovery ---------------------------------------------------------------------------------------
    def metadata(self) -> ProviderMetadata:
        with self._lock:
            fresh = self._metadata is not None and time.monotonic() - self._fetched_at < DISCOVERY_TTL
            if fresh and self._metadata is not None:
                return self._metadata
            if self._metadata is None and time.monotonic() - self._failed_at < DISCOVERY_RETRY:
                raise IdpError(f"{self.config.display_name} cannot be reached right now. Try again in a minute.")
            try:
                document = self._get_json(self.config.issuer.rstrip("/") + "/.well-known/openid-configuration")
                metadata = self._read_metadata(document)
            except IdpError:
                self._failed_at = time.monotonic()
                if self._metadata is not None:  # keep using what worked until the provider answers again
                    return self._metadata
                raise
            if self._jwks is None or self._jwks.jwks_uri != metadata.jwks_uri:
                self._jwks = RemoteKeys(metadata.jwks_uri)
            self._metadata, self._fetched_at = metadata, time.monotonic()
            return metadata

    def _read_metadata(self, document: dict[str, Any]) -> ProviderMetadata:
        if document.get("issuer") != self.config.issuer:
            # OpenID Connect Discovery §4.3: a document for another issuer must not be used (mix-up defence).
            raise IdpError(f"{self.config.display_name} announces a different issuer than the one configured")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not is_secure_transport(value):
                raise IdpError(f"{self.config.display_name}'s configuration has no usable {name} (https required)")
            endpoints[name] = value
        return ProviderMetadata(**endpoints)

    # -- the authorization request -----------------------------------------------------------------------
    def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        endpoint = self.metadata().authorization_endpoint
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        return f"{endpoint}{'&' if urlsplit(endpoint).query else '?'}{urlencode(params)}"

    # -- the token request and the id_token ----------------------------------------------------------------
    def redeem(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> dict[str, Any]:
        """Exchanges the code and returns the verified id_token claims."""
        metadata = self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        auth: tuple[str, str] | None = None
        config = self.config
        if config.token_auth_method == "client_secret_basic":
            auth = (config.client_id, config.client_secret)
        elif config.token_auth_method == "client_secret_post":
            form |= {"client_id": config.client_id, "client_secret": config.client_secret}
        else:
            form |= {
                "client_id": config.client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self._client_assertion(metadata.token_endpoint),
            }
        answer = self._post_form(metadata.token_endpoint, form, auth)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise IdpError(f"{config.display_name} answered without an id_token", 502)
        assert self._jwks is not None  # set with the metadata
        try:
            return verify_id_token(
                id_token,
                self._jwks,
                issuer=config.issuer,
                client_id=config.client_id,
                nonce=nonce,
                algorithms=config.algorithms,
            )
        except IdTokenError as exc:
            raise IdpError(f"The identity {config.display_name} sent could not be verified: {exc}.", 400) from None

    def _client_assertion(self, token_endpoint: str) -> str:
        """RFC 7523 / OpenID Connect Core §9 private_key_jwt: aud is the provider's token endpoint."""
        now = int(time.time())
        claims = {
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": token_endpoint,
            "jti": secrets.token_urlsafe(18),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return self.keys.sign(claims)

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _get_json(self, url: str) -> dict[str, Any]:
        return self._request("GET", url)

    def _post_form(self, url: str, form: dict[str, str], auth: tuple[str, str] | None) -> dict[str, Any]:
        return self._request("POST", url, form=form, basic_auth=auth)

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        name = self.config.display_name
        try:
            # No redirects (outbound.py): the provider's endpoints are exactly where its metadata says.
            answer = OUTBOUND.request(
                method,
                url,
                timeout=HTTP_TIMEOUT,
                headers={"Accept": "application/json"},
                max_bytes=MAX_RESPONSE_BYTES,
                **kwargs,
            )
        except OutboundError as exc:
            if exc.kind == "too-large":
                raise IdpError("The identity provider answered with more data than a sign-in needs.") from None
            raise IdpError(f"{name} cannot be reached right now. Try again in a minute.") from None
        try:
            document = answer.json()
        except ValueError:
            document = None
        if answer.status_code != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            detail = f" ({str(error)[:60]})" if isinstance(error, str) else ""
            raise IdpError(f"{name} refused the request{detail}.", 502)
        return document

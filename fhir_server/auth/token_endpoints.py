"""Token introspection (RFC 7662, SMART's Token Introspection page) and revocation (RFC 7009).

Introspection callers authenticate as a registered confidential client or present a valid bearer access token
(a resource server holding a token may ask about others).  Any authenticated caller may introspect any token:
knowing a token already gives what its introspection tells.  Expired, revoked, unknown and foreign tokens are
all just ``{"active": false}``.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from fhir_server.auth.credentials import digest
from fhir_server.auth.models import AccessToken, Client, RefreshToken
from fhir_server.auth.revocation import utcnow
from fhir_server.auth.tokens import TokenError
from fhir_server.store import oauth_store

if TYPE_CHECKING:
    from fhir_server.auth.oauth_request import FormRequest, Site
    from fhir_server.auth.server import SmartAuthorizationServer


class _Known:
    """A token this server issued, as introspection and revocation see it."""

    def __init__(self, server: SmartAuthorizationServer, site: Site, token: AccessToken | RefreshToken) -> None:
        self.server, self.site, self.token = server, site, token

    def check_client(self, client: Client) -> bool:
        return self.token.check_client(client)

    def is_expired(self) -> bool:
        return self.token.is_expired() if isinstance(self.token, AccessToken) else self.token.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        if isinstance(self.token, AccessToken):
            claims = self.token.claims
            return self.server.revocations.is_revoked(claims.get("jti"), claims.get("sid"))
        return not self.token.active

    def revoke(self) -> None:
        if isinstance(self.token, RefreshToken):
            self.server.revocations.revoke_grant(self.token.sid)
        elif self.token.claims.get("jti"):
            self.server.revocations.revoke_token(self.token.claims["jti"], self.token.claims["exp"])

    def describe(self) -> dict[str, Any]:
        if isinstance(self.token, AccessToken):
            claims = self.token.claims
            out = {k: claims[k] for k in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud") if k in claims}
            out["token_type"] = "Bearer"
            out.update({k: claims[k] for k in ("patient", "encounter") if claims.get(k)})
            if claims.get("fhirUser"):  # as in the id_token: the absolute URL
                out["fhirUser"] = f"{self.site.fhir_base}/{claims['fhirUser']}"
            return out
        token = self.token
        user = self.server.user(token.user_id) if token.user_id else None
        out = {
            "scope": token.scope,
            "client_id": token.client_id,
            "exp": int(token.expires_at.replace(tzinfo=UTC).timestamp()),  # stored as naive UTC
            "iss": self.site.issuer,
            "token_type": "refresh_token",
        }
        if user is not None:
            out["sub"] = user.user_id
            out["fhirUser"] = f"{self.site.fhir_base}/{user.fhir_user}"
        if token.context.patient:
            out["patient"] = token.context.patient
        return out


def find_token(server: SmartAuthorizationServer, site: Site, value: str, hint: str | None) -> _Known | None:
    """An access token (a JWT this server signed for this FHIR base) or a refresh token (looked up by digest)."""
    if value.count(".") == 2 and hint != "refresh_token":
        try:
            return _Known(server, site, AccessToken(server.verify_access_token(value, site)))
        except TokenError:
            return None
    if "." in value or len(value) > 512:
        return None
    row = oauth_store.find_refresh_token(server.engine, digest(value))
    return _Known(server, site, RefreshToken.from_row(row, utcnow())) if row else None


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]
    server: SmartAuthorizationServer

    def authenticate_endpoint_client(self, request: FormRequest) -> Any:
        authorization = request.headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return super().authenticate_endpoint_client(request)
        try:
            claims = self.server.verify_access_token(token.strip(), request.site)
        except TokenError:
            raise InvalidTokenError("The bearer token is not a valid access token of this server") from None
        if self.server.revocations.is_revoked(claims.get("jti"), claims.get("sid")):
            raise InvalidTokenError("The bearer token has been revoked")
        request.client = claims.get("client_id")
        return request.client

    def authenticate_token(self, request: FormRequest, client: Any) -> _Known | None:
        """Overrides authlib's lookup (query_token + check_permission): the lookup needs the request's site, and
        every authenticated caller may introspect (see the module docstring)."""
        self.check_params(request, client)
        return find_token(self.server, request.site, request.form["token"], request.form.get("token_type_hint"))

    def introspect_token(self, token: _Known) -> dict[str, Any]:
        return token.describe()


class Revocation(RevocationEndpoint):
    """A refresh token revokes its whole grant; an access token goes on the revoked list until it expires."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]
    server: SmartAuthorizationServer

    def authenticate_token(self, request: FormRequest, client: Client) -> _Known | None:
        """Overrides authlib's lookup (query_token), which does not get the request's site."""
        self.check_params(request, client)
        token = find_token(self.server, request.site, request.form["token"], request.form.get("token_type_hint"))
        if token is not None and not token.check_client(client):
            # RFC 7009 §2.1: the server verifies the token was issued to the client asking.
            raise InvalidClientError(description="This token was not issued to this client")
        return token

    def revoke_token(self, token: _Known, request: FormRequest) -> None:
        token.revoke()

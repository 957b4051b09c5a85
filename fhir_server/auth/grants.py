"""The three grants, as authlib grant subclasses: authorization code (PKCE S256 required), refresh token (rotation
with reuse detection) and client credentials (SMART Backend Services).

Single use is decided by the database (store/oauth_store.py): redeeming a code or a refresh token is one
conditional UPDATE.  A code or refresh token presented a second time revokes its whole grant (RFC 6749 §4.1.2 and
§10.4; OAuth 2.0 Security BCP §4.14): whoever holds the other copy, it is dead.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge

from fhir_server.auth import scope_policy
from fhir_server.auth.credentials import digest
from fhir_server.auth.models import AuthorizationCode, GrantContext, RefreshToken, User
from fhir_server.auth.revocation import utcnow
from fhir_server.store import oauth_store

if TYPE_CHECKING:
    from fhir_server.auth.oauth_request import FormRequest
    from fhir_server.auth.server import SmartAuthorizationServer

CODE_LIFETIME = timedelta(seconds=60)
TOKEN_AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]


class S256CodeChallenge(CodeChallenge):
    """PKCE for every client, S256 only (SMART App Launch 2: ``plain`` is not allowed)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is not accepted)")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing code_verifier: this server requires PKCE")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: AuthorizationCode) -> str:
        return "S256"


class SmartAuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    request: FormRequest
    server: SmartAuthorizationServer

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        try:
            self.server.check_smart_parameters(self.request)
        except OAuth2Error as error:
            error.redirect_uri = redirect_uri  # verified above: errors may go back to the app
            raise
        return redirect_uri

    def save_authorization_code(self, code: str, request: FormRequest) -> None:
        context = request.grant_context or GrantContext()
        user: User = request.user
        scopes = scope_policy.for_user_app(
            (request.scope or "").split(),
            patient=context.patient,
            encounter=context.encounter,
            ehr_launch=request.launch is not None,
            user_is_patient=user.patient_id is not None,
        )
        if not scopes:
            raise InvalidScopeError(
                "None of the requested scopes can be granted in this launch context",
                redirect_uri=request.payload.redirect_uri,
            )
        oauth_store.save_code(
            self.server.engine,
            {
                "code_hash": digest(code),
                "client_id": request.client.client_id,
                "user_id": user.user_id,
                "redirect_uri": request.payload.redirect_uri,
                "code_challenge": request.payload.data["code_challenge"],
                "scope": " ".join(scopes),
                "context": context.to_json(),
                "expires_at": utcnow() + CODE_LIFETIME,
            },
        )

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        status, row = oauth_store.redeem_code(
            self.server.engine, digest(code), client.client_id, secrets.token_urlsafe(18), utcnow()
        )
        if status == "reused" and row is not None:
            self.server.revocations.revoke_grant(row["sid"])
            raise InvalidGrantError("This authorization code was already used; the tokens issued for it are revoked")
        return AuthorizationCode.from_row(row) if status == "ok" and row is not None else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: the code was marked used when redeemed, and its row stays until it expires so that a
        second redemption is recognised (and revokes the grant)."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return self.server.user(authorization_code.user_id)

    def generate_token(self, user: Any = None, scope: Any = None, **_: Any) -> dict[str, Any]:
        code: AuthorizationCode = self.request.authorization_code
        return self.server.issue(
            self.request,
            user=user,
            scope=code.scope,
            context=code.context,
            sid=code.sid,
            refresh=scope_policy.wants_refresh_token(code.scope),
        )


class RotatingRefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    request: FormRequest
    server: SmartAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        token_hash = digest(refresh_token)
        row = oauth_store.find_refresh_token(self.server.engine, token_hash)
        if row is None or row["client_id"] != self.request.client.client_id:
            return None  # a foreign client's token is not burnt: it proves nothing about the holder
        if row["revoked"] or row["grant_revoked"] or row["expires_at"] <= utcnow():
            raise InvalidGrantError("The refresh token has expired or was revoked")
        if row["used"] or not oauth_store.use_refresh_token(self.server.engine, token_hash):
            self.server.revocations.revoke_grant(row["sid"])
            raise InvalidGrantError("This refresh token was already used; its grant is now revoked")
        return RefreshToken.from_row({**row, "used": False}, utcnow())

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        return self.server.user(refresh_token.user_id) if refresh_token.user_id else None

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Nothing to do: the old token was marked used, atomically, when it was accepted."""

    def generate_token(self, user: Any = None, scope: Any = None, **_: Any) -> dict[str, Any]:
        old: RefreshToken = self.request.refresh_token
        self.request.grant_scope = old.scope  # a narrower access token leaves the grant as it was
        # OpenID Connect Core §12.2: an id_token from a refresh carries no nonce.
        context = replace(old.context, nonce=None)
        return self.server.issue(self.request, user=user, scope=scope, context=context, sid=old.sid, refresh=True)


class BackendServicesGrant(grants.ClientCredentialsGrant):
    """SMART Backend Services: client_credentials with a private_key_jwt assertion, system/ scopes only."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]
    request: FormRequest
    server: SmartAuthorizationServer

    def validate_token_request(self) -> None:
        super().validate_token_request()
        scopes = scope_policy.for_backend(self.request.payload.scope or "", self.request.client.scope)
        if not scopes:
            raise InvalidScopeError("None of the requested scopes is allowed for this client (system/ scopes only)")
        self.request.scope = " ".join(scopes)

    def generate_token(self, **_: Any) -> dict[str, Any]:
        return self.server.issue(
            self.request, user=None, scope=self.request.scope, context=GrantContext(), sid=None, refresh=False
        )

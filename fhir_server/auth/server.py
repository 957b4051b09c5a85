"""The SMART on FHIR authorization server: authlib's AuthorizationServer with this server's storage, grants,
client authentication methods and token format.  Framework-free: the web layer hands it FormRequests and turns
the (status, body, headers) it answers into HTTP responses (fhir_server/web/oauth_adapter.py).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749.errors import InvalidRequestError

from fhir_server.auth.assertions import PrivateKeyJwt, RemoteKeySets
from fhir_server.auth.credentials import digest, new_secret
from fhir_server.auth.grants import (
    BackendServicesGrant,
    RotatingRefreshTokenGrant,
    S256CodeChallenge,
    SmartAuthorizationCodeGrant,
)
from fhir_server.auth.issuance import access_token_claims, id_token_claims
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.models import CLIENT_ID, Client, GrantContext, User
from fhir_server.auth.oauth_request import FormRequest, Site
from fhir_server.auth.revocation import RevocationList, utcnow
from fhir_server.auth.token_endpoints import Introspection, Revocation
from fhir_server.auth.tokens import verify_access_token
from fhir_server.config import Settings
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database

PRUNE_INTERVAL = 600.0

Answer = tuple[int, Any, list[tuple[str, str]]]


class SmartAuthorizationServer(AuthorizationServer):
    def __init__(
        self,
        engine: Database,
        keys: KeyStore,
        revocations: RevocationList,
        settings: Settings,
        remote_keys: RemoteKeySets | None = None,
    ) -> None:
        super().__init__(scopes_supported=None)  # scopes are checked per client (scope_policy), not globally
        self.engine = engine
        self.keys = keys
        self.revocations = revocations
        self.settings = settings
        self._pruned_at = 0.0
        self.register_grant(SmartAuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_grant(RotatingRefreshTokenGrant)
        self.register_grant(BackendServicesGrant)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self, remote_keys))
        self.register_endpoint(Introspection(self))
        self.register_endpoint(Revocation(self))

    # -- what authlib asks of a framework integration ------------------------------------------------------
    def query_client(self, client_id: Any) -> Client | None:
        if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
            return None
        row = oauth_store.get_client(self.engine, client_id)
        return Client.from_row(row) if row else None

    def create_oauth2_request(self, request: Any) -> FormRequest:
        if not isinstance(request, FormRequest):
            raise TypeError("the web layer passes FormRequest objects")
        return request

    def create_json_request(self, request: Any) -> Any:
        # authlib asks for this only for JSON-bodied endpoints (dynamic client registration), which this server
        # does not offer: clients are registered with `fhir-server clients add`.  Reaching it is a wiring error.
        raise TypeError("this authorization server has no JSON-bodied endpoints")

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Answer:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal listeners: auditing of token events happens where they are decided."""

    def save_token(self, token: dict[str, Any], request: FormRequest) -> None:
        record = request.refresh_record
        if record is not None:
            oauth_store.save_refresh_token(self.engine, record)
        self._maybe_prune()

    # -- this server's rules -------------------------------------------------------------------------------
    def user(self, user_id: str) -> User | None:
        row = oauth_store.get_user(self.engine, user_id)
        return User.from_row(row) if row else None

    def check_smart_parameters(self, request: FormRequest) -> None:
        """SMART App Launch §"Obtain authorization code": state and aud are required, aud must name this FHIR
        server (a token must not be requested for one server and replayed at another), and ``launch`` must name a
        live launch context of this server."""
        if not request.first("state"):
            raise InvalidRequestError("Missing state: SMART apps must send an unguessable state")
        aud = request.first("aud")
        if aud not in request.site.audiences and (aud is not None or not _sign_in_only(request)):
            raise InvalidRequestError("aud must be the FHIR base URL of this server")
        launch_id = request.first("launch")
        if launch_id is not None:
            launch = oauth_store.get_launch(self.engine, launch_id[:64], utcnow()) if len(launch_id) <= 64 else None
            if launch is None:
                raise InvalidRequestError("The launch parameter names no live launch context")
            request.launch = launch

    def verify_access_token(self, token: str, site: Site) -> dict[str, Any]:
        """Claims of an access token this server issued for this FHIR base (TokenError otherwise)."""
        return verify_access_token(
            token, self.keys.verification_keys, issuer=site.issuer, audience=list(site.audiences)
        )

    def issue(
        self,
        request: FormRequest,
        *,
        user: User | None,
        scope: str,
        context: GrantContext,
        sid: str | None,
        refresh: bool,
    ) -> dict[str, Any]:
        """The token response (SMART App Launch "Response to a token request")."""
        client, site, settings = request.client, request.site, self.settings
        now = int(time.time())
        lifetime = settings.access_token_lifetime_seconds
        claims = access_token_claims(
            issuer=site.issuer,
            audience=site.fhir_base,
            client_id=client.client_id,
            subject=user.user_id if user else client.client_id,
            scope=scope,
            lifetime=lifetime,
            patient=context.patient,
            encounter=context.encounter,
            fhir_user=user.fhir_user if user else None,
            sid=sid,
            now=now,
        )
        token: dict[str, Any] = {
            "access_token": self.keys.sign(claims),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scope,
        }
        if user is None:
            return token
        if context.patient:
            token["patient"] = context.patient
        if context.encounter:
            token["encounter"] = context.encounter
        if context.fhir_context:
            token["fhirContext"] = context.fhir_context
        if context.app_context is not None:  # CDS Hooks 2.0: a card link's appContext, for the app to read
            token["appContext"] = context.app_context
        token["need_patient_banner"] = context.need_patient_banner
        token["smart_style_url"] = settings.smart_style_url or f"{site.origin}/auth/smart-style.json"
        scopes = scope.split()
        if "openid" in scopes:
            id_claims = id_token_claims(
                issuer=site.issuer,
                client_id=client.client_id,
                user=user,
                fhir_base=site.fhir_base,
                scopes=scopes,
                lifetime=lifetime,
                nonce=context.nonce,
                auth_time=context.auth_time,
                now=now,
            )
            token["id_token"] = self.keys.sign(id_claims)
        if refresh and sid:
            grant_scope = request.grant_scope or scope
            offline = "offline_access" in grant_scope.split()
            # online_access: the refresh token lives no longer than a login session would.
            seconds = settings.refresh_token_lifetime_seconds if offline else settings.login_session_seconds
            value = new_secret()
            token["refresh_token"] = value
            request.refresh_record = {
                "token_hash": digest(value),
                "sid": sid,
                "client_id": client.client_id,
                "user_id": user.user_id,
                "scope": grant_scope,
                "context": context.to_json(),
                "issued_at": utcnow(),
                "expires_at": utcnow() + timedelta(seconds=seconds),
            }
        return token

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._pruned_at > PRUNE_INTERVAL:
            self._pruned_at = time.monotonic()
            oauth_store.prune_expired(self.engine, utcnow())


# An OpenID Connect relying party that uses this server only to sign its users in (another server, with this one as
# its identity provider) knows nothing of SMART's aud.  Such a request asks for identity and nothing else, and the
# token it gets grants no FHIR data, so aud may be left out; a wrong aud is still refused.
SIGN_IN_SCOPES = frozenset({"openid", "profile", "fhirUser", "email"})


def _sign_in_only(request: FormRequest) -> bool:
    scopes = set((request.first("scope") or "").split())
    return "openid" in scopes and scopes <= SIGN_IN_SCOPES and request.first("launch") is None

"""The authorization server's records, shaped for authlib's grant machinery (its ClientMixin and token duck types).

Built from ``store.oauth_store`` rows; nothing here talks SQL.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from authlib.oauth2.rfc6749.models import ClientMixin

from fhir_server.auth import scope_policy
from fhir_server.auth.credentials import matches_digest

CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
AUTH_METHODS = ("none", "client_secret_basic", "private_key_jwt")


@dataclass(frozen=True)
class Client(ClientMixin):
    client_id: str
    name: str
    client_type: str  # public | confidential
    auth_method: str  # none | client_secret_basic | private_key_jwt
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    scope: str  # registered (allowed) scopes
    jwks: dict[str, Any] | None
    jwks_url: str | None
    origins: tuple[str, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Client:
        return cls(
            client_id=row["client_id"],
            name=row["name"],
            client_type=row["client_type"],
            auth_method=row["auth_method"],
            secret_hash=row["secret_hash"],
            redirect_uris=tuple(orjson.loads(row["redirect_uris"])),
            scope=row["scope"],
            jwks=orjson.loads(row["jwks"]) if row["jwks"] else None,
            jwks_url=row["jwks_url"],
            origins=tuple(orjson.loads(row["origins"])),
        )

    # -- authlib's ClientMixin --
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # SMART apps always send redirect_uri; it must match a registered one exactly

    def get_allowed_scope(self, scope: str | None) -> str | None:
        granted = scope_policy.within_client(scope or "", self.scope)
        return " ".join(granted) if granted else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string match, no prefix or pattern

    def check_client_secret(self, client_secret: str) -> bool:
        return self.auth_method == "client_secret_basic" and matches_digest(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type in ("authorization_code", "refresh_token"):
            return bool(self.redirect_uris)
        # Backend Services authenticate with a signed assertion (SMART requires asymmetric keys for them).
        return grant_type == "client_credentials" and self.auth_method == "private_key_jwt"


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    fhir_user: str  # e.g. Practitioner/123
    may_pick_patient: bool
    display_name: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(
            row["user_id"], row["username"], row["fhir_user"], bool(row["may_pick_patient"]), row["display_name"]
        )

    def get_user_id(self) -> str:
        return self.user_id

    @property
    def patient_id(self) -> str | None:
        """A patient signing in for themselves: their own record is the patient context."""
        kind, _, ident = self.fhir_user.partition("/")
        return ident if kind == "Patient" and ident else None


@dataclass(frozen=True)
class GrantContext:
    """What a grant carries from authorization to every token issued for it."""

    patient: str | None = None
    encounter: str | None = None
    fhir_context: list[dict[str, Any]] = field(default_factory=list)
    need_patient_banner: bool = False
    nonce: str | None = None
    auth_time: int | None = None
    app_context: str | None = None  # the launch's appContext (a CDS card's), returned as is with every token

    def to_json(self) -> str:
        return orjson.dumps(self.__dict__).decode()

    @classmethod
    def from_json(cls, text: str) -> GrantContext:
        data = orjson.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class AuthorizationCode:
    client_id: str
    user_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    context: GrantContext
    sid: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuthorizationCode:
        return cls(
            row["client_id"],
            row["user_id"],
            row["redirect_uri"],
            row["code_challenge"],
            row["scope"],
            GrantContext.from_json(row["context"]),
            row["sid"],
        )

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token as stored (never the token itself)."""

    sid: str
    client_id: str
    user_id: str | None
    scope: str
    context: GrantContext
    expires_at: datetime
    active: bool  # not used, not revoked, grant not revoked

    @classmethod
    def from_row(cls, row: dict[str, Any], now: datetime) -> RefreshToken:
        active = not (row["used"] or row["revoked"] or row["grant_revoked"]) and row["expires_at"] > now
        return cls(
            row["sid"],
            row["client_id"],
            row["user_id"],
            row["scope"],
            GrantContext.from_json(row["context"]),
            row["expires_at"],
            active,
        )

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class AccessToken:
    """A verified JWT access token of this server (for introspection and revocation)."""

    claims: dict[str, Any]

    def check_client(self, client: Client) -> bool:
        return self.claims.get("client_id") == client.client_id

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def is_expired(self) -> bool:
        return float(self.claims.get("exp", 0)) <= time.time()

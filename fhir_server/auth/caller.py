"""Who is calling: the identity and grant a validated access token carries, as the resource server uses them.

A ``Caller`` is built once per request from the token's claims (or is ``Caller.unrestricted()`` when
``FHIR_SERVER_AUTH_REQUIRED=false``) and travels with the request; access decisions live in ``auth/access.py``.

Access-token claims issued by this server's authorization server (and accepted from a configured EHR's):
``iss``, ``aud`` (the FHIR base URL), ``sub``, ``client_id``, ``scope`` (space separated), ``jti``, ``iat``,
``exp``, and when the grant has them ``patient``, ``encounter``, ``fhirUser``, ``sid`` (the grant, shared by the
tokens a refresh chain issues).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from fhir_server.auth.scopes import Grant, ResourceScope, parse_scopes

_EVERYTHING = Grant((ResourceScope("system", "*", frozenset("cruds")),))


@dataclass(frozen=True)
class Caller:
    grant: Grant
    authenticated: bool
    patient: str | None = None  # the launch patient: patient/ scopes reach only this patient's compartment
    encounter: str | None = None
    client_id: str | None = None
    subject: str | None = None  # ``sub``: the user, or the client itself for Backend Services
    fhir_user: str | None = None  # e.g. Practitioner/123
    token_id: str | None = None  # ``jti``
    grant_id: str | None = None  # ``sid``
    issuer: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def unrestricted(cls) -> Caller:
        """Authorization switched off (local development): everything is allowed and nothing is audited."""
        return cls(grant=_EVERYTHING, authenticated=False)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Caller:
        scope = claims.get("scope")
        if isinstance(scope, list):  # some servers send a JSON array
            scope = " ".join(str(s) for s in scope)
        patient = claims.get("patient")
        return cls(
            grant=parse_scopes(scope if isinstance(scope, str) else ""),
            authenticated=True,
            patient=patient if isinstance(patient, str) and patient else None,
            encounter=_text(claims.get("encounter")),
            client_id=_text(claims.get("client_id")) or _text(claims.get("azp")),
            subject=_text(claims.get("sub")),
            fhir_user=_text(claims.get("fhirUser")),
            token_id=_text(claims.get("jti")),
            grant_id=_text(claims.get("sid")),
            issuer=_text(claims.get("iss")),
            claims=claims,
        )

    @property
    def audited(self) -> bool:
        return self.authenticated

    @property
    def fingerprint(self) -> str:
        """Binds paging links to the token that made them: a short digest, never the token itself."""
        if not self.authenticated:
            return ""
        basis = f"{self.issuer}|{self.token_id or ''}|{self.subject or ''}|{self.client_id or ''}"
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    @property
    def who(self) -> str:
        """For logs and audit: the user or the client, never token material."""
        return self.fhir_user or self.subject or self.client_id or "anonymous"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

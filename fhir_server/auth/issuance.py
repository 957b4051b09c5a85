"""The claims of the tokens this server signs: access tokens (read by the resource server, see auth/caller.py) and
OpenID Connect id_tokens (read by apps)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fhir_server.auth.models import User


def access_token_claims(
    *,
    issuer: str,
    audience: str,
    client_id: str,
    subject: str,
    scope: str,
    lifetime: int,
    patient: str | None = None,
    encounter: str | None = None,
    fhir_user: str | None = None,
    sid: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """``fhirUser`` is relative here (``Practitioner/123``, what the resource server audits); ``sid`` names the
    grant, so revoking the grant refuses every access token issued along its refresh chain."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "client_id": client_id,
        "scope": scope,
        "jti": secrets.token_urlsafe(18),
        "iat": issued,
        "exp": issued + lifetime,
    }
    optional = {"patient": patient, "encounter": encounter, "fhirUser": fhir_user, "sid": sid}
    claims.update({k: v for k, v in optional.items() if v})
    return claims


def id_token_claims(
    *,
    issuer: str,
    client_id: str,
    user: User,
    fhir_base: str,
    scopes: list[str],
    lifetime: int,
    nonce: str | None,
    auth_time: int | None,
    now: int | None = None,
) -> dict[str, Any]:
    """OpenID Connect Core §2; SMART's ``fhirUser`` is the absolute URL of the user's FHIR resource."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": user.user_id,
        "aud": client_id,
        "iat": issued,
        "exp": issued + lifetime,
    }
    if nonce:
        claims["nonce"] = nonce
    if auth_time:
        claims["auth_time"] = auth_time
    if "fhirUser" in scopes:
        claims["fhirUser"] = f"{fhir_base}/{user.fhir_user}"
    if "profile" in scopes:
        claims["name"] = user.display_name or user.username
        claims["preferred_username"] = user.username
    return claims

"""Verification of an external identity provider's id_token (OpenID Connect Core 1.0 §3.1.3.7).

Checked, in this order: a compact JWS (never unsigned, never encrypted); ``alg`` on the configured allow-list
(asymmetric only, so never ``none`` and never an HMAC keyed with something public); the signature, by the key the
header names with ``kid`` in the provider's JWKS; ``iss`` exactly the configured issuer; ``aud`` this server's
client id and nothing else (an id_token also meant for another party could be replayed by it); ``azp``, when
present, this client; ``exp`` in the future and ``iat`` neither in the future nor older than ``MAX_AGE``; and
``nonce`` exactly the one this sign-in sent, which binds the token to this browser's session (a code or token
injected from another sign-in fails here).  Messages name what is wrong, never token material.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.auth.tokens import TokenError, unverified_header

CLOCK_SKEW = 60  # seconds of clock difference tolerated between the provider and this server
MAX_AGE = 600  # an id_token fresh from the token endpoint was issued moments ago
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class IdTokenError(Exception):
    pass


def verify_id_token(
    token: str,
    keys: Callable[[str | None], KeySet],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: Sequence[str],
    now: float | None = None,
) -> dict[str, Any]:
    """The verified claims; IdTokenError naming the first check that failed otherwise.  ``keys`` gives the
    provider's key set for a ``kid`` (re-fetching it when the kid is new: the provider rotated its keys)."""
    try:
        header = unverified_header(token)
    except TokenError:
        raise IdTokenError("the id_token is not a signed JWT") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms or algorithm not in ASYMMETRIC:
        raise IdTokenError(f"the id_token is signed with an algorithm that is not accepted ({str(algorithm)[:16]})")
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    candidates = [k for k in keys(kid).keys if kid is None or k.kid == kid]
    if not candidates:
        raise IdTokenError("the id_token is signed with a key the identity provider does not publish")
    claims = _first_verifying(token, candidates, algorithm)
    moment = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise IdTokenError("the id_token was issued by another identity provider")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    if client_id not in audiences:
        raise IdTokenError("the id_token is meant for another client")
    if any(a != client_id for a in audiences):
        raise IdTokenError("the id_token is also meant for other parties")
    if "azp" in claims and claims["azp"] != client_id:
        raise IdTokenError("the id_token was issued to another client (azp)")
    _check_times(claims, moment)
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise IdTokenError("the id_token does not belong to this sign-in (nonce mismatch)")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise IdTokenError("the id_token names no subject")
    return claims


def _first_verifying(token: str, candidates: list[Any], algorithm: str) -> dict[str, Any]:
    # Without a kid the provider publishes a single key in practice; trying each is still only the provider's keys.
    for key in candidates:
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm]).claims
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(claims, dict):
            return claims
    raise IdTokenError("the id_token's signature does not verify")


def _check_times(claims: dict[str, Any], moment: float) -> None:
    expires, issued = claims.get("exp"), claims.get("iat")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise IdTokenError("the id_token has no expiry")
    if expires + CLOCK_SKEW < moment:
        raise IdTokenError("the id_token has expired")
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        raise IdTokenError("the id_token has no issue time")
    if issued - CLOCK_SKEW > moment:
        raise IdTokenError("the id_token is issued in the future (check the clocks)")
    if issued + MAX_AGE < moment:
        raise IdTokenError("the id_token is too old")


def claim_value(claims: dict[str, Any], claim: str) -> str | None:
    """The value that names the user.  ``email`` counts only when the provider has verified it (OpenID Connect
    Core §5.7: an unverified address is whatever the user typed)."""
    value = claims.get(claim)
    if claim == "email" and claims.get("email_verified") is not True:
        return None
    return value if isinstance(value, str) and value else None

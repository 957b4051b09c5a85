"""Access-token validation for the resource server (docs/security.md): signature by a known key, an ``alg`` from an
allow-list (never ``none``, never HMAC where a public key is published), ``iss``, ``aud``, ``exp`` and ``nbf``.

Every refusal is a TokenError whose ``code`` is the OperationOutcome issue code the API answers with (``login``,
or ``expired``) and whose message names what was wrong without echoing token material.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ALLOWED_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
LEEWAY_SECONDS = 30


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenError("login", "The bearer token is not a signed JWT")
    try:
        header = orjson.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise TokenError("login", "The bearer token's header is not valid JSON") from None
    if not isinstance(header, dict):
        raise TokenError("login", "The bearer token's header is not a JSON object")
    return header


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header (to choose the key set by ``kid``); nothing in it is trusted yet."""
    return _header(token)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim before verification, only to pick which issuer's keys to verify with."""
    _header(token)
    payload = token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise TokenError("login", "The bearer token's claims are not valid JSON") from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def signing_key(keys: KeySet, kid: Any, algorithm: str | None = None) -> Any:
    """The key a token names by ``kid``.  Without a ``kid``, the one signing key of the set that fits the token's
    algorithm (OpenID Connect Core §10.1 requires a ``kid`` only when several keys could be meant; the SMART
    launcher's id_tokens carry none beside its one-key JWKS); None when no key or several keys fit."""
    if isinstance(kid, str) and kid:
        return next((k for k in keys.keys if k.kid == kid), None)
    if kid is not None:
        return None
    fitting = [k for k in keys.keys if k.get("use") in (None, "sig") and _fits(k, algorithm)]
    return fitting[0] if len(fitting) == 1 else None


def _fits(key: Any, algorithm: str | None) -> bool:
    """A key can verify ``algorithm``: its type matches the algorithm's family and its own ``alg``, if any,
    is that algorithm."""
    if algorithm is None:
        return True
    declared = key.get("alg")
    family = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}.get(algorithm[:2])
    return key.key_type == family and (declared is None or declared == algorithm)


def verify_access_token(
    token: str,
    keys: KeySet | Callable[[str | None], KeySet],
    *,
    issuer: str,
    audience: str | Sequence[str],
    now: float | None = None,
) -> dict[str, Any]:
    """The token's claims when it is valid for this server; TokenError otherwise.  ``keys`` may be a function of
    the token's ``kid`` (a key store that re-reads its keys after a rotation).  ``audience`` may list several
    accepted spellings of this server's base URL."""
    header = _header(token)
    if callable(keys):
        kid_claim = header.get("kid")
        keys = keys(kid_claim if isinstance(kid_claim, str) else None)
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise TokenError("login", f"Token algorithm '{str(algorithm)[:16]}' is not accepted")
    key = signing_key(keys, header.get("kid"), algorithm)
    if key is None:
        raise TokenError("login", "The token is not signed with a key this server knows")
    try:
        claims = jwt.decode(token, key, algorithms=[algorithm]).claims
    except (JoseError, ValueError):
        raise TokenError("login", "The token's signature does not verify") from None
    moment = time.time() if now is None else now
    if not isinstance(claims.get("exp"), int | float):
        raise TokenError("login", "The token has no expiry")
    if claims["exp"] + LEEWAY_SECONDS < moment:
        raise TokenError("expired", "The token has expired")
    if isinstance(claims.get("nbf"), int | float) and claims["nbf"] - LEEWAY_SECONDS > moment:
        raise TokenError("login", "The token is not valid yet")
    if claims.get("iss") != issuer:
        raise TokenError("login", "The token was issued by another authorization server")
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    accepted = [audience] if isinstance(audience, str) else list(audience)
    if not any(a in audiences for a in accepted):
        raise TokenError("login", "The token is meant for another server")
    return claims

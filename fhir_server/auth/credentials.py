"""Secrets at rest: random values are stored as SHA-256 digests, user passwords as argon2 hashes.

Client secrets, authorization codes, refresh tokens and session cookies are 256-bit random values made here, so a
fast digest cannot be brute-forced and keeps the token endpoint fast.  Passwords are chosen by people: argon2id
(argon2-cffi's defaults) makes each guess expensive.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
# Verified when the username is unknown, so a wrong username costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def matches_digest(value: str, stored_digest: str | None) -> bool:
    return bool(stored_digest) and hmac.compare_digest(digest(value), stored_digest or "")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

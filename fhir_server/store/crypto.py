"""Authenticated encryption of the secrets this server has to keep in readable form (docs/security.md, "Integrity").

What the server issues itself (its client secrets, codes, refresh tokens, passwords) is stored as digests and never
comes through here.  What it must present or use again (an EHR's access and refresh tokens, an EHR's client secret,
its own private signing keys) is sealed with AES-256-GCM under a key that is not in the database
(``FHIR_SERVER_SECRET_KEY`` or ``FHIR_SERVER_SECRET_KEY_FILE``).

A sealed value is text, ``fhs1:<key id>:<base64url(nonce | ciphertext | tag)>``:

- ``fhs1`` is the format version, so a later format can be told apart;
- the key id (derived from the key, reveals nothing about it) says which key sealed it, so during a rotation the
  server reads values under the previous key while it writes under the new one;
- the associated data names the value's table and column (its *purpose*): a value copied into another column (a
  refresh token pasted where a client secret belongs) fails to open instead of being used.

Only ``cryptography``'s AESGCM is used: a 96-bit random nonce per value (far below the 2^32 values per key where
random nonces start to matter), the 128-bit tag checked on every open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhir_server.config import DEFAULT_SECRET_KEY_FILE, Settings

FORMAT = "fhs1"
PREFIX = FORMAT + ":"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
NEW_KEY_HINT = "make one with `fhir-server keys new-secret`"


class SecretKeyError(Exception):
    """The secret key is missing, malformed or not the one the stored secrets were sealed with.  The message is
    one line for the operator and never contains key material."""


def generate_key() -> str:
    """A new key in the text form the settings take: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode()


def parse_key(text: str, where: str) -> bytes:
    value = text.strip()
    try:
        # validate=True: the lenient default skips characters outside the alphabet, accepting mistyped keys
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(f"{where} is not a secret key (32 random bytes, base64url); {NEW_KEY_HINT}")
    return raw


def key_id(key: bytes) -> str:
    """A short public name for a key: an HMAC under the key itself, so it identifies the key without revealing
    anything of it."""
    return hmac.new(key, b"fhir-server secret key id", hashlib.sha256).hexdigest()[:12]


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


def sealed_key_id(value: str) -> str | None:
    parts = value.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == FORMAT else None


class Keyring:
    """The current key (seals; may be absent) and previous keys (only open, during a rotation)."""

    def __init__(self, current: bytes | None, previous: Sequence[bytes] = ()) -> None:
        self.current_id = key_id(current) if current else None
        # Pseudonyms (``pseudonym``) use a key derived from the current one under a label of their own: a
        # pseudonym then says nothing about the key that seals the secrets.
        self._pseudonyms = hmac.new(current, b"fhir-server pseudonym key", hashlib.sha256).digest() if current else None
        self._keys: dict[str, AESGCM] = {}
        for key in [*previous, *([current] if current else [])]:
            self._keys[key_id(key)] = AESGCM(key)

    @property
    def configured(self) -> bool:
        return self.current_id is not None

    def __repr__(self) -> str:  # never the keys
        return f"Keyring(current={self.current_id}, known={sorted(self._keys)})"

    def seal(self, value: str, purpose: str) -> str:
        if self.current_id is None:
            raise SecretKeyError(
                f"no secret key is configured, so {purpose} cannot be stored: set FHIR_SERVER_SECRET_KEY or "
                f"FHIR_SERVER_SECRET_KEY_FILE ({NEW_KEY_HINT})"
            )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_id].encrypt(nonce, value.encode(), _associated(self.current_id, purpose))
        return f"{PREFIX}{self.current_id}:{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"

    def open(self, value: str, purpose: str) -> str:
        """The plain text of a sealed value; SecretKeyError when it is not sealed, sealed under a key this keyring
        does not hold, altered, or sealed for another purpose."""
        kid = sealed_key_id(value)
        if kid is None:
            # Strict: a plain value in a secret column is never used.  Otherwise whoever can write to the database
            # could plant a signing key of their own choosing.
            raise SecretKeyError(
                f"a value in {purpose} is not encrypted; start the server with its secret key once, or run "
                "`fhir-server keys rotate-secret`, to encrypt secrets stored by an earlier version"
            )
        cipher = self._keys.get(kid)
        if cipher is None:
            raise SecretKeyError(
                f"a secret in {purpose} was encrypted with key {kid}, which is not configured "
                f"(FHIR_SERVER_SECRET_KEY, or FHIR_SERVER_SECRET_KEY_PREVIOUS during a rotation)"
            )
        body = value.split(":", 2)[2]
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _associated(kid, purpose)).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretKeyError(f"a secret in {purpose} does not decrypt (altered, or moved from elsewhere)") from None

    def pseudonym(self, value: str) -> str:
        """A stable, one-way name for ``value`` under the current key (an erased patient's reference in the audit
        trail): the same value gives the same name, and without the key nobody can tell which value it names."""
        if self._pseudonyms is None:
            raise SecretKeyError(f"no secret key is configured to make pseudonyms with; {NEW_KEY_HINT}")
        return hmac.new(self._pseudonyms, value.encode(), hashlib.sha256).hexdigest()[:40]

    def seal_optional(self, value: str | None, purpose: str) -> str | None:
        return None if value is None else self.seal(value, purpose)

    def open_optional(self, value: str | None, purpose: str) -> str | None:
        return None if value is None else self.open(value, purpose)

    def is_current(self, value: str) -> bool:
        return self.current_id is not None and sealed_key_id(value) == self.current_id


def _associated(kid: str, purpose: str) -> bytes:
    return f"fhir-server|{FORMAT}|{kid}|{purpose}".encode()


def keyring_from_settings(settings: Settings) -> Keyring:
    """The keyring the settings describe: ``secret_key`` (or, when empty, the key file) and ``secret_key_previous``
    (keys separated by commas or white space)."""
    current: bytes | None = None
    text = settings.secret_key.get_secret_value().strip()
    if text:
        current = parse_key(text, "FHIR_SERVER_SECRET_KEY")
    else:
        current = _key_from_file(settings.secret_key_file, explicit=settings.secret_key_file != DEFAULT_SECRET_KEY_FILE)
    previous_text = settings.secret_key_previous.get_secret_value().replace(",", " ")
    previous = [parse_key(p, "FHIR_SERVER_SECRET_KEY_PREVIOUS") for p in previous_text.split()]
    return Keyring(current, previous)


def _key_from_file(path_text: str, *, explicit: bool) -> bytes | None:
    if not path_text:
        return None
    path = Path(path_text)
    if not path.exists():
        if explicit:  # a key file that was named must be there; the default one is only used when present
            raise SecretKeyError(f"the secret key file {path} (FHIR_SERVER_SECRET_KEY_FILE) does not exist")
        return None
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"the secret key file {path} cannot be read: {exc.strerror}") from None
    return parse_key(text, f"the secret key file {path}")


def write_key_file(path: Path, key: str) -> None:
    """A new key file readable by its owner only; never overwrites (that would lose the key to the data)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")

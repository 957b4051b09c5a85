"""Where the secret key meets the database: sealing and opening secret columns, the start-up check, the
encryption of plain-text secrets left by earlier versions, and re-encryption under a new key.

Every engine carries the keyring of the settings it was built from (``bind``, called by ``build_engine``); an engine
made elsewhere gets the process's settings.  So the stores seal and open with the engine they already hold, and no
caller threads a key through.

The check value (``secret_key_check``) is sealed when a key is first used on a database.  Start-up opens it: a
missing or wrong key then stops the server with one line instead of failing later on every token.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, and_, func, insert, inspect, not_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fhir_server.config import Settings
from fhir_server.store.client_request_tables import form_links
from fhir_server.store.crypto import PREFIX, Keyring, SecretKeyError, keyring_from_settings, sealed_key_id
from fhir_server.store.records import utc_now
from fhir_server.store.tables import app_sessions, ehr_registrations, secret_key_check, signing_keys

# Every column that holds a secret the server must be able to read back.  Hashed secrets are not here.
SECRET_COLUMNS: tuple[Column[Any], ...] = (
    signing_keys.c.private_jwk,
    ehr_registrations.c.client_secret,
    app_sessions.c.access_token,
    app_sessions.c.refresh_token,
    app_sessions.c.code_verifier,
    form_links.c.token_sealed,  # a reminder carries the link again
    form_links.c.recipient_sealed,  # the client's email address or phone number
)
CHECK_NAME = "canary"
CHECK_TEXT = "fhir-server secret key check"
CHECK_COLUMN = secret_key_check.c.value


def purpose(column: Column[Any]) -> str:
    """The associated data of a column's values: its table and name (a value moved elsewhere will not open)."""
    return f"{column.table.name}.{column.name}"


@dataclass
class _Binding:
    settings: Settings | None
    keyring: Keyring | None = None
    verified: bool = False  # the check value opened (or was written) with this keyring
    lock: threading.Lock = field(default_factory=threading.Lock)


_bindings: weakref.WeakKeyDictionary[Engine, _Binding] = weakref.WeakKeyDictionary()
_bindings_lock = threading.Lock()


def bind(engine: Engine, settings: Settings) -> None:
    """The keyring of ``settings`` for ``engine``; read when first needed, so a bad key is reported by whatever
    needs it, as a SecretKeyError."""
    with _bindings_lock:
        _bindings[engine] = _Binding(settings)


def _binding(bind_to: Engine | Connection) -> tuple[Engine, _Binding]:
    engine = bind_to.engine if isinstance(bind_to, Connection) else bind_to
    with _bindings_lock:
        binding = _bindings.get(engine)
        if binding is None:
            binding = _bindings[engine] = _Binding(None)
    return engine, binding


def keyring(bind_to: Engine | Connection) -> Keyring:
    _, binding = _binding(bind_to)
    with binding.lock:
        if binding.keyring is None:
            binding.keyring = keyring_from_settings(binding.settings or Settings())
        return binding.keyring


def key_verified(engine: Engine) -> bool:
    """A key is configured and has opened this database's check value (at start-up, or at the first seal): for the
    readiness check, which must not read or write the database for it."""
    ring = keyring(engine)
    _, binding = _binding(engine)
    return ring.configured and binding.verified


def seal(engine: Engine, column: Column[Any], value: str | None) -> str | None:
    """The value to write into a secret column.  Call it before opening the write's transaction: the first seal on
    an engine checks the key against the database (on SQLite, from inside a write it would wait for itself)."""
    if value is None:
        return None
    ring = keyring(engine)
    if ring.configured:
        _verify_once(engine, ring)
    return ring.seal(value, purpose(column))


def open_value(engine: Engine | Connection, column: Column[Any], value: str | None) -> str | None:
    return keyring(engine).open_optional(value, purpose(column))


def _verify_once(engine: Engine, ring: Keyring) -> None:
    """Never seal under a key the database's other secrets were not sealed with (a CLI run with the wrong key
    would leave a value the servers cannot read)."""
    _, binding = _binding(engine)
    if binding.verified:
        return
    verify_key(engine, ring)
    binding.verified = True


def verify_key(engine: Engine, ring: Keyring) -> None:
    """Open the check value, or write it when the database has none yet; SecretKeyError when the key is wrong."""
    with engine.connect() as conn:
        stored = conn.execute(select(CHECK_COLUMN).where(secret_key_check.c.name == CHECK_NAME)).scalar()
        if stored is None:
            # No check value (a database from before, or a fresh one): a stored secret shows whether the key fits.
            for column in SECRET_COLUMNS:
                sample = conn.execute(select(column).where(column.like(PREFIX + "%")).limit(1)).scalar()
                if sample is not None:
                    _open_or_refuse(ring, sample, column)
    if stored is not None:
        _open_or_refuse(ring, stored, CHECK_COLUMN)
        return
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(secret_key_check).values(
                    name=CHECK_NAME, value=ring.seal(CHECK_TEXT, purpose(CHECK_COLUMN)), updated_at=utc_now()
                )
            )
    except IntegrityError:  # another process wrote it first: it must open with our key too
        verify_key(engine, ring)


def _open_or_refuse(ring: Keyring, value: str, column: Column[Any]) -> None:
    try:
        ring.open(value, purpose(column))
    except SecretKeyError:
        kid = sealed_key_id(value) or "?"
        raise SecretKeyError(
            f"the configured secret key is not the one this database's secrets are encrypted with (key id {kid}); "
            "set that key in FHIR_SERVER_SECRET_KEY or FHIR_SERVER_SECRET_KEY_FILE (during a rotation the old one "
            "in FHIR_SERVER_SECRET_KEY_PREVIOUS)"
        ) from None


def _counts(conn: Connection) -> tuple[int, int]:
    """(sealed, plain) values in the secret columns."""
    sealed = plain = 0
    for column in SECRET_COLUMNS:
        sealed += conn.execute(select(func.count()).where(column.like(PREFIX + "%"))).scalar_one()
        plain += conn.execute(
            select(func.count()).where(column.is_not(None), not_(column.like(PREFIX + "%")))
        ).scalar_one()
    return sealed, plain


def check_at_startup(engine: Engine) -> str:
    """Before serving: refuse (SecretKeyError) when secrets are stored and the key is missing or wrong; with the
    key, encrypt plain-text secrets an earlier version stored.  Returns a line for the log."""
    ring = keyring(engine)
    if not inspect(engine).has_table(secret_key_check.name):
        return "secret key not checked: the database schema is older (fhir-server db upgrade)"
    with engine.connect() as conn:
        has_check = conn.execute(select(func.count()).select_from(secret_key_check)).scalar_one() > 0
        sealed, plain = _counts(conn)
    if not ring.configured:
        if has_check or sealed:
            raise SecretKeyError(
                "the database holds encrypted secrets, but no secret key is configured: set FHIR_SERVER_SECRET_KEY "
                "or FHIR_SERVER_SECRET_KEY_FILE"
            )
        if plain:
            raise SecretKeyError(
                f"the database holds {plain} secrets stored in plain text by an earlier version: configure a secret "
                "key (FHIR_SERVER_SECRET_KEY or FHIR_SERVER_SECRET_KEY_FILE; `fhir-server keys new-secret` makes one) "
                "and the server encrypts them when it starts"
            )
        return (
            "no secret key configured (FHIR_SERVER_SECRET_KEY / FHIR_SERVER_SECRET_KEY_FILE): storing a secret "
            "(the token-signing key, an EHR's tokens or client secret) will fail until one is set"
        )
    verify_key(engine, ring)
    _, binding = _binding(engine)
    binding.verified = True
    encrypted = encrypt_plain(engine) if plain else 0
    return f"secret key {ring.current_id} checked" + (
        f"; {encrypted} plain-text secrets encrypted" if encrypted else ""
    )


def encrypt_plain(engine: Engine) -> int:
    """Seal every plain value of the secret columns (left by a version that stored them in clear).  Each update
    applies only if the value is still the one read, so concurrent starts and writers never clobber each other."""
    ring = keyring(engine)
    done = 0
    for column in SECRET_COLUMNS:
        keys = list(column.table.primary_key.columns)
        with engine.connect() as conn:
            rows = conn.execute(select(*keys, column).where(column.is_not(None), not_(column.like(PREFIX + "%")))).all()
        for row in rows:
            *key_values, value = row
            done += _replace(engine, column, keys, key_values, value, ring.seal(value, purpose(column)))
    return done


def _replace(engine: Engine, column: Column[Any], keys: list[Any], key_values: list[Any], old: str, new: str) -> int:
    match = and_(*(k == v for k, v in zip(keys, key_values, strict=True)), column == old)
    with engine.begin() as conn:
        return conn.execute(update(column.table).where(match).values({column.name: new})).rowcount


@dataclass
class Rotation:
    re_encrypted: dict[str, int] = field(default_factory=dict)  # per column
    already_current: int = 0
    changed_meanwhile: int = 0  # written (under the new key) by a running server while this ran

    @property
    def total(self) -> int:
        return sum(self.re_encrypted.values())


def rotate(engine: Engine, progress: Callable[[str, int, int], None] | None = None) -> Rotation:
    """Re-encrypt every stored secret (and the check value) under the current key, reading with the current and
    previous keys.  Every value is opened before anything is written: one that does not open stops the rotation
    with nothing changed."""
    ring = keyring(engine)
    if not ring.configured:
        raise SecretKeyError("no secret key is configured to rotate to: set FHIR_SERVER_SECRET_KEY (the new key)")
    plan: list[tuple[Column[Any], list[Any], list[tuple[list[Any], str, str]]]] = []
    result = Rotation()
    for column in [CHECK_COLUMN, *SECRET_COLUMNS]:
        keys = list(column.table.primary_key.columns)
        with engine.connect() as conn:
            rows = conn.execute(select(*keys, column).where(column.is_not(None))).all()
        changes = []
        for row in rows:
            *key_values, value = row
            if ring.is_current(value):
                result.already_current += 1
                continue
            # Plain values (from an earlier version) are sealed as they are; sealed ones must open.
            plain = ring.open(value, purpose(column)) if value.startswith(PREFIX) else value
            changes.append((key_values, value, ring.seal(plain, purpose(column))))
        plan.append((column, keys, changes))
    for column, keys, changes in plan:
        written = 0
        for number, (key_values, old, new) in enumerate(changes, 1):
            if _replace(engine, column, keys, key_values, old, new):
                written += 1
            else:
                result.changed_meanwhile += 1
            if progress:
                progress(purpose(column), number, len(changes))
        result.re_encrypted[purpose(column)] = written
    verify_key(engine, ring)  # the check value now opens with the new key (written, if the database had none)
    return result

"""Secrets at rest (docs/security.md, "Integrity"; store/crypto.py): the EHR's access and refresh tokens, the EHR client
secret, the PKCE verifier and the signing keys' private parts never appear in clear in any column of any table;
a value moved to another column or altered does not open; plain-text secrets of an earlier version are encrypted
at start-up; without a key, secrets are refused rather than stored in clear.  Both databases, fresh per test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import text

from fhir_server.auth.keys import KeyStore
from fhir_server.ehr import registry
from fhir_server.smart.sessions import AppSessionStore
from fhir_server.store import secret_store
from fhir_server.store.crypto import SecretKeyError, generate_key, key_id, keyring_from_settings, parse_key
from tests.store.secrets_support import (
    engine_for,
    fresh_database,
    leaked,
    private_parts,
    raw_text,
    raw_value,
    settings_for,
    store_secrets,
)
from tests.support.server import ServerThread

KEY = generate_key()


@pytest.fixture
def url(backend: str) -> Iterator[str]:
    with fresh_database(backend) as made:
        yield made


def test_no_secret_is_readable_in_the_raw_tables(url, backend):
    with ServerThread(settings_for(url, KEY), backend) as running:  # start-up: the key check is written
        engine = running.app.state.engine
        public = httpx.get(f"{running.root}/auth/jwks").json()  # the first signing key is made on demand
        stored = store_secrets(engine, "raw")
        private = private_parts(engine)
        assert len(private) == 6 and all(len(p) > 20 for p in private)

        plain = [stored[name] for name in ("client_secret", "access_token", "refresh_token", "code_verifier")]
        assert leaked(engine, *plain, *private) == []
        # The scan does see what is stored in clear (so an empty result above means something):
        values = [v for _, _, v in raw_text(engine)]
        assert stored["issuer"] in values and public["keys"][0]["kid"] in values
        assert public["keys"][0]["n"] not in "".join(values)  # even the public part sits inside the sealed JWK

        sealed = raw_value(engine, "ehr_registrations", "client_secret", "issuer = :i", i=stored["issuer"])
        assert sealed.startswith(f"fhs1:{key_id(parse_key(KEY, 'test'))}:")
        # ... and every consumer still gets the plain values.
        assert registry.by_issuer(engine, stored["issuer"]).client_secret == stored["client_secret"]
        session = running.app.state.app_sessions.get(stored["session_hash"])
        assert (session.access_token, session.refresh_token, session.code_verifier) == (
            stored["access_token"],
            stored["refresh_token"],
            stored["code_verifier"],
        )
        token = running.app.state.keys.sign({"sub": "x", "exp": int(time.time()) + 60})
        assert jwt.decode(token, KeySet.import_key_set(public), algorithms=["RS384"]).claims["sub"] == "x"


def test_a_value_moved_to_another_column_or_altered_does_not_open(url):
    with engine_for(url, KEY) as engine:
        stored = store_secrets(engine, "moved")
        sessions = AppSessionStore(engine, 3600)
        sealed_secret = raw_value(engine, "ehr_registrations", "client_secret", "issuer = :i", i=stored["issuer"])
        sealed_token = raw_value(engine, "app_sessions", "access_token", "session_hash = :h", h=stored["session_hash"])
        with engine.begin() as conn:  # what someone who can write to the database might try
            conn.execute(
                text("UPDATE app_sessions SET refresh_token = :v WHERE session_hash = :h"),
                {"v": sealed_secret, "h": stored["session_hash"]},
            )
        with pytest.raises(SecretKeyError, match="does not decrypt"):
            sessions.get(stored["session_hash"])
        flipped = sealed_token[:-2] + ("A" if sealed_token[-2] != "A" else "B") + sealed_token[-1]
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE app_sessions SET refresh_token = NULL, access_token = :v WHERE session_hash = :h"),
                {"v": flipped, "h": stored["session_hash"]},
            )
        with pytest.raises(SecretKeyError, match="does not decrypt"):
            sessions.get(stored["session_hash"])
        KeyStore(engine).jwks()  # a signing key exists ...
        with engine.begin() as conn:  # ... and a planted plain value (say, a key of one's own) is never used
            assert conn.execute(text("UPDATE signing_keys SET private_jwk = :v"), {"v": '{"kty": "RSA"}'}).rowcount == 1
        with pytest.raises(SecretKeyError, match="not encrypted"):
            KeyStore(engine).jwks()


def test_plain_text_secrets_of_an_earlier_version_are_encrypted_at_start_up(url):
    plain_secret, plain_token = "legacy-client-secret-42", "legacy-access-token-43"
    with engine_for(url, "") as engine, engine.begin() as conn:  # as the previous version stored them
        conn.execute(
            text(
                "INSERT INTO ehr_registrations (issuer, name, client_id, auth_method, client_secret, scope, "
                "resource_types, created_at) VALUES ('https://old.example/fhir', 'old', 'app', "
                "'client_secret_basic', :s, 'launch', 'Observation', CURRENT_TIMESTAMP)"
            ),
            {"s": plain_secret},
        )
        conn.execute(
            text(
                "INSERT INTO app_sessions (session_hash, created_at, expires_at, csrf_token, submission_key, "
                "access_token, need_patient_banner) VALUES (:h, CURRENT_TIMESTAMP, :e, 'c', 'k', :t, false)"
            ),
            {"h": "a" * 64, "e": datetime(2999, 1, 1), "t": plain_token},
        )
    # No key: refuse rather than serve them in clear.
    with engine_for(url, "") as engine, pytest.raises(SecretKeyError, match="2 secrets stored in plain text"):
        secret_store.check_at_startup(engine)
    with engine_for(url, KEY) as engine:
        assert "2 plain-text secrets encrypted" in secret_store.check_at_startup(engine)
        assert leaked(engine, plain_secret, plain_token) == []
        assert registry.by_issuer(engine, "https://old.example/fhir").client_secret == plain_secret
        assert AppSessionStore(engine, 60).get("a" * 64).access_token == plain_token
        assert "encrypted" not in secret_store.check_at_startup(engine)  # nothing left to do the second time


def test_without_a_key_the_server_starts_but_stores_no_secret(url):
    with engine_for(url, "") as engine:
        assert "no secret key configured" in secret_store.check_at_startup(engine)
        with pytest.raises(SecretKeyError, match="no secret key is configured"):
            registry.register(
                engine, issuer="https://nokey.example/fhir", client_id="a", auth_method="client_secret_basic",
                client_secret="never-stored-in-clear",
            )  # fmt: skip
        with pytest.raises(SecretKeyError, match=r"signing_keys\.private_jwk cannot be stored"):
            KeyStore(engine).jwks()
        assert leaked(engine, "never-stored-in-clear") == [] and registry.all_registrations(engine) == []
        # What needs no secret still works: a session without tokens.
        _, session = AppSessionStore(engine, 60).create_session(patient="p")
        assert session.access_token is None


def test_a_wrong_or_missing_key_is_refused_once_secrets_are_stored(url):
    with engine_for(url, KEY) as engine:
        assert "checked" in secret_store.check_at_startup(engine)
        store_secrets(engine, "refuse")
    with engine_for(url, generate_key()) as engine:
        with pytest.raises(SecretKeyError, match="not the one this database's secrets are encrypted with"):
            secret_store.check_at_startup(engine)
        # Nor does a command run with the wrong key add a secret the servers could not read.
        with pytest.raises(SecretKeyError, match="not the one"):
            registry.register(
                engine, issuer="https://wrong.example/fhir", client_id="a", auth_method="client_secret_basic",
                client_secret="under-the-wrong-key",
            )  # fmt: skip
    with engine_for(url, "") as engine, pytest.raises(SecretKeyError, match="no secret key is configured"):
        secret_store.check_at_startup(engine)


def test_the_key_check_catches_a_wrong_key_even_without_its_check_value(url):
    with engine_for(url, KEY) as engine:
        store_secrets(engine, "nocheck")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM secret_key_check"))
    with engine_for(url, generate_key()) as engine, pytest.raises(SecretKeyError, match="not the one"):
        secret_store.check_at_startup(engine)
    with engine_for(url, KEY) as engine:
        assert "checked" in secret_store.check_at_startup(engine)
        stored = raw_value(engine, "secret_key_check", "value", "name = 'canary'")
        assert stored.startswith("fhs1:")  # written again


def test_malformed_keys_are_refused_with_the_remedy():
    for bad in ("short", "x" * 42, generate_key() + "AAAA", "!" + generate_key()[1:]):
        with pytest.raises(SecretKeyError, match=r"not a secret key .*keys new-secret"):
            parse_key(bad, "FHIR_SERVER_SECRET_KEY")
    missing = settings_for("sqlite://", "")
    missing.secret_key_file = "/nonexistent/fhir-server.key"
    with pytest.raises(SecretKeyError, match="does not exist"):
        keyring_from_settings(missing)
    ring = keyring_from_settings(settings_for("sqlite://", KEY))
    assert ring.configured and KEY not in repr(ring) and KEY not in repr(settings_for("sqlite://", KEY))

"""The secret key from the operator's side, each command in its own process as the operator runs it: rotation to
a new key (after which the old one is not needed), ``serve`` refusing a missing or wrong key in one line,
``ehr add`` taking the client secret from standard input or a variable but never from argv, and key files."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from fhir_server.auth.keys import KeyStore
from fhir_server.ehr import registry
from fhir_server.smart.sessions import AppSessionStore
from fhir_server.store import secret_store
from fhir_server.store.crypto import SecretKeyError, generate_key, key_id, parse_key
from tests.store.secrets_support import (
    engine_for,
    fhir_server,
    fresh_database,
    leaked,
    private_parts,
    raw_text,
    store_secrets,
)
from tests.support.server import free_port

OLD, NEW = generate_key(), generate_key()


@pytest.fixture
def url(backend: str) -> Iterator[str]:
    with fresh_database(backend) as made:
        yield made


def test_rotation_re_encrypts_everything_and_the_old_key_is_no_longer_needed(url):
    with engine_for(url, OLD) as engine:
        secret_store.check_at_startup(engine)
        stored = store_secrets(engine, "rotate")
        public = KeyStore(engine).jwks()
        private = private_parts(engine)

    # Without the old key the new one cannot read anything: refused, with the remedy, and nothing changed.
    refused = fhir_server("keys", "rotate-secret", url=url, FHIR_SERVER_SECRET_KEY=NEW)
    assert refused.returncode == 1 and "not configured" in refused.stderr and "PREVIOUS" in refused.stderr
    assert "Traceback" not in refused.stderr
    with engine_for(url, OLD) as engine:
        assert registry.by_issuer(engine, stored["issuer"]).client_secret == stored["client_secret"]

    rotated = fhir_server(
        "keys", "rotate-secret", url=url, FHIR_SERVER_SECRET_KEY=NEW, FHIR_SERVER_SECRET_KEY_PREVIOUS=OLD
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "signing_keys.private_jwk: 1" in rotated.stdout and "ehr_registrations.client_secret: 1" in rotated.stdout
    assert "app_sessions.refresh_token: 1" in rotated.stdout and "secret_key_check.value: 1" in rotated.stdout
    assert "6 secrets re-encrypted" in rotated.stdout  # + access token and PKCE verifier

    with engine_for(url, NEW) as engine:  # the new key alone: everything opens and works
        assert "checked" in secret_store.check_at_startup(engine)
        new_id = key_id(parse_key(NEW, "new"))
        sealed = [v for _, _, v in raw_text(engine) if v.startswith("fhs1:")]
        assert len(sealed) == 6 and all(v.startswith(f"fhs1:{new_id}:") for v in sealed)
        assert leaked(engine, *private, stored["client_secret"], stored["access_token"]) == []
        assert registry.by_issuer(engine, stored["issuer"]).client_secret == stored["client_secret"]
        session = AppSessionStore(engine, 60).get(stored["session_hash"])
        assert (session.access_token, session.refresh_token) == (stored["access_token"], stored["refresh_token"])
        keys = KeyStore(engine)
        assert keys.jwks() == public  # the same signing key, still published
        token = keys.sign({"sub": "after-rotation", "exp": int(time.time()) + 60})
        claims = jwt.decode(token, KeySet.import_key_set(public), algorithms=["RS384"]).claims
        assert claims["sub"] == "after-rotation"
    with engine_for(url, OLD) as engine, pytest.raises(SecretKeyError, match="not the one"):
        secret_store.check_at_startup(engine)  # the old key opens nothing any more

    again = fhir_server("keys", "rotate-secret", url=url, FHIR_SERVER_SECRET_KEY=NEW)
    assert again.returncode == 0 and "0 secrets re-encrypted, 6 already under" in again.stdout


def _serve(url: str, cwd, **env: str):
    """``fhir-server serve`` in a folder without a key file; it must stop by itself (a started server would hang
    until the timeout)."""
    return fhir_server("serve", "--port", str(free_port()), url=url, cwd=cwd, **env)


def test_serve_refuses_a_missing_or_wrong_key_in_one_line(url, tmp_path):
    with engine_for(url, OLD) as engine:
        secret_store.check_at_startup(engine)
        store_secrets(engine, "serve")
    for env, message in (
        ({"FHIR_SERVER_SECRET_KEY": ""}, "no secret key is configured"),
        ({"FHIR_SERVER_SECRET_KEY": NEW}, "not the one this database's secrets are encrypted with"),
        ({"FHIR_SERVER_SECRET_KEY": "not-a-key"}, "FHIR_SERVER_SECRET_KEY is not a secret key"),
        ({"FHIR_SERVER_SECRET_KEY": "", "FHIR_SERVER_SECRET_KEY_FILE": str(tmp_path / "gone.key")}, "does not exist"),
    ):
        started = time.monotonic()
        refused = _serve(url, tmp_path, **env)
        assert refused.returncode == 1, (env, refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fhir-server: not starting:") and message in lines[0], lines
        assert time.monotonic() - started < 60
        assert OLD not in refused.stderr + refused.stdout


def test_ehr_add_takes_the_secret_from_stdin_or_a_variable_never_argv(url):
    from_stdin = fhir_server(
        *("ehr", "add", "--issuer", "https://stdin.example/fhir", "--client-id", "a", "--auth", "client_secret_basic"),
        "--secret-stdin",
        url=url,
        stdin="secret-from-stdin-123\n",
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    from_env = fhir_server(
        *("ehr", "add", "--issuer", "https://env.example/fhir", "--client-id", "b", "--auth", "client_secret_basic"),
        *("--secret-env", "EHR_SECRET"),
        url=url,
        EHR_SECRET="secret-from-env-456",
    )
    assert from_env.returncode == 0, from_env.stderr
    argv = fhir_server(
        *("ehr", "add", "--issuer", "https://argv.example/fhir", "--client-id", "c", "--auth", "client_secret_basic"),
        *("--secret", "secret-on-argv-789"),
        url=url,
    )
    assert argv.returncode == 1 and "--secret is not accepted" in argv.stderr and "--secret-stdin" in argv.stderr
    unset = fhir_server(
        *("ehr", "add", "--issuer", "https://unset.example/fhir", "--client-id", "d", "--auth", "client_secret_basic"),
        *("--secret-env", "NO_SUCH_VARIABLE_HERE"),
        url=url,
    )
    assert unset.returncode == 1 and "NO_SUCH_VARIABLE_HERE is not set" in unset.stderr
    with engine_for(url, os.environ["FHIR_SERVER_SECRET_KEY"]) as engine:  # the run's key, which the CLI used
        assert registry.by_issuer(engine, "https://stdin.example/fhir").client_secret == "secret-from-stdin-123"
        assert registry.by_issuer(engine, "https://env.example/fhir").client_secret == "secret-from-env-456"
        assert registry.by_issuer(engine, "https://argv.example/fhir") is None
        assert registry.by_issuer(engine, "https://unset.example/fhir") is None
        assert leaked(engine, "secret-from-stdin-123", "secret-from-env-456") == []
    listed = fhir_server("ehr", "list", url=url)
    assert listed.returncode == 0 and listed.stdout.count("(secret set)") == 2 and "secret-from" not in listed.stdout


def test_new_secret_key_files(url, tmp_path):
    path = tmp_path / "fhir-server.key"
    made = fhir_server("keys", "new-secret", "--file", str(path), url=url, FHIR_SERVER_SECRET_KEY="")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(parse_key(key, "file")) == 32 and key not in made.stdout + made.stderr
    again = fhir_server("keys", "new-secret", "--file", str(path), url=url, FHIR_SERVER_SECRET_KEY="")
    assert again.returncode == 1 and "never overwritten" in again.stderr and path.read_text().strip() == key
    # `make serve`: no new file when a key is configured (here the default file, in the working directory).
    other = tmp_path / "other.key"
    kept = fhir_server(
        *("keys", "new-secret", "--file", str(other), "--unless-configured"),
        url=url,
        cwd=tmp_path,
        FHIR_SERVER_SECRET_KEY="",
    )
    assert kept.returncode == 0 and not other.exists()
    printed = fhir_server("keys", "new-secret", url=url)
    assert printed.returncode == 0 and len(parse_key(printed.stdout, "printed")) == 32

    # The default key file in the working directory is the key: a secret stored with it opens with it.
    stored = fhir_server(
        *("ehr", "add", "--issuer", "https://file.example/fhir", "--client-id", "f", "--auth", "client_secret_basic"),
        "--secret-stdin",
        url=url,
        cwd=tmp_path,
        stdin="secret-under-the-file-key\n",
        FHIR_SERVER_SECRET_KEY="",
    )
    assert stored.returncode == 0, stored.stderr
    with engine_for(url, key) as engine:
        assert registry.by_issuer(engine, "https://file.example/fhir").client_secret == "secret-under-the-file-key"


def test_serve_refuses_erasure_without_a_secret_key(url, tmp_path):
    """$expunge names an erased patient in the audit trail by a keyed pseudonym: enabled without a key, the server
    says so at start rather than failing every erasure."""
    refused = _serve(url, tmp_path, FHIR_SERVER_SECRET_KEY="", FHIR_SERVER_EXPUNGE_ENABLED="true")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fhir-server: not starting: FHIR_SERVER_EXPUNGE_ENABLED"), lines

"""``fhir-server clients | users | token | keys`` run as the operator runs them (a subprocess against the test
database): clients and users are stored, secrets are shown once, a minted token verifies with the server's keys,
and every mistake is a clear message with a non-zero exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from joserfc.jwk import RSAKey

from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import verify_access_token
from fhir_server.config import Settings
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade
from tests.auth.smart_support import unique

PUBLIC_URL = "https://fhir.example.org"


def run(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url, "FHIR_SERVER_PUBLIC_URL": PUBLIC_URL}
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def field(output: str, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(f"{name}: "))


def test_clients_add_list_remove(database_url):
    client_id = unique("cli-app")
    added = run(
        database_url,
        *("clients", "add", "--name", "Outcome app", "--client-id", client_id, "--secret"),
        *(
            "--redirect-uri",
            "https://app.example.org/cb",
            "--scope",
            "openid user/*.rs",
            "--origin",
            "https://app.example.org",
        ),
    )
    assert added.returncode == 0, added.stderr
    assert field(added.stdout, "client_id") == client_id and len(field(added.stdout, "client_secret")) >= 40
    listed = run(database_url, "clients", "list")
    assert client_id in listed.stdout and "client_secret_basic" in listed.stdout
    assert field(added.stdout, "client_secret") not in listed.stdout  # shown once, stored as a digest only

    again = run(
        database_url, "clients", "add", "--name", "x", "--client-id", client_id, "--redirect-uri", "https://a/cb"
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run(database_url, "clients", "remove", client_id).returncode == 0
    gone = run(database_url, "clients", "remove", client_id)
    assert gone.returncode == 1 and f"unknown client '{client_id}'" in gone.stderr


def test_backend_client_from_a_jwks_file(database_url, tmp_path: Path):
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS384"}, private=True)
    public, private = tmp_path / "public.json", tmp_path / "private.json"
    public.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    private.write_bytes(orjson.dumps({"keys": [key.as_dict(private=True)]}))
    ok = run(database_url, "clients", "add", "--name", "Integrator", "--jwks-file", str(public))
    assert ok.returncode == 0, ok.stderr
    assert field(ok.stdout, "scope") == "system/*.rs" and "client_secret" not in ok.stdout

    leaked = run(database_url, "clients", "add", "--name", "Oops", "--jwks-file", str(private))
    assert leaked.returncode == 1 and "private key" in leaked.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = run(database_url, "clients", "add", "--name", "Bad", "--jwks-file", str(tmp_path / "bad.json"))
    assert bad.returncode == 1 and "is not JSON" in bad.stderr
    missing = run(database_url, "clients", "add", "--name", "Gone", "--jwks-file", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--public",), "needs at least one --redirect-uri"),
        (("--public", "--redirect-uri", "/relative"), "absolute URI"),
        (("--public", "--redirect-uri", "https://a.example/cb", "--scope", "patient/*.everything"), "not a valid"),
        (("--public", "--redirect-uri", "https://a.example/cb", "--origin", "https://a.example/path"), "origin"),
        (("--jwks-url", "http://example.org/jwks.json"), "https"),
        (("--public", "--redirect-uri", "https://a.example/cb", "--client-id", "has space"), "client id"),
    ],
)
def test_clients_add_refusals(database_url, args, message):
    done = run(database_url, "clients", "add", "--name", "Refused", *args)
    assert done.returncode == 1 and message in done.stderr, done.stderr


def test_users_add_list_remove(database_url):
    username = unique("clinician")
    added = run(
        database_url,
        *("users", "add", username, "--fhir-user", "Practitioner/42", "--may-pick-patient", "--password-stdin"),
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    listed = run(database_url, "users", "list")
    assert username in listed.stdout and "Practitioner/42" in listed.stdout and "argon2" not in listed.stdout
    duplicate = run(
        database_url, "users", "add", username, "--fhir-user", "Practitioner/42", "--password-stdin", stdin="x" * 12
    )
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    short = run(
        database_url, "users", "add", unique("u"), "--fhir-user", "Practitioner/1", "--password-stdin", stdin="short"
    )
    assert short.returncode == 1 and "at least" in short.stderr
    wrong = run(
        database_url, "users", "add", unique("u"), "--fhir-user", "Observation/1", "--password-stdin", stdin="x" * 12
    )
    assert wrong.returncode == 1 and "--fhir-user" in wrong.stderr
    assert run(database_url, "users", "remove", username).returncode == 0
    assert run(database_url, "users", "remove", username).returncode == 1


def test_token_for_a_registered_client_verifies_with_the_server_keys(database_url):
    client_id = unique("cli-backend")
    key = RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=False)
    jwks = {"keys": [key.as_dict(private=False)]}
    upgrade(database_url)  # this test may be the first in its worker to touch the session's database
    engine = build_engine(Settings(database_url=database_url, _env_file=None))
    try:
        from fhir_server.auth import admin

        admin.add_client(engine, name="Curl", kind="jwks", jwks=jwks, client_id=client_id, redirect_uris=[])
        done = run(database_url, "token", "--client-id", client_id, "--scope", "system/*.rs", "--lifetime", "120")
        assert done.returncode == 0, done.stderr
        claims = verify_access_token(
            done.stdout.strip(),
            KeyStore(engine).verification_keys,
            issuer=f"{PUBLIC_URL}/auth",
            audience=f"{PUBLIC_URL}/fhir",
        )
        assert claims["client_id"] == client_id and claims["scope"] == "system/*.rs"
        assert claims["exp"] - claims["iat"] == 120

        refused = run(database_url, "token", "--client-id", client_id, "--scope", "system/*.cruds")
        assert refused.returncode == 1 and "scope not allowed" in refused.stderr and refused.stdout == ""
        unknown = run(database_url, "token", "--client-id", "nobody-here", "--scope", "system/*.rs")
        assert unknown.returncode == 1 and "unknown client" in unknown.stderr
        long = run(database_url, "token", "--client-id", client_id, "--scope", "system/*.rs", "--lifetime", "86400")
        assert long.returncode == 1 and "--lifetime" in long.stderr
    finally:
        engine.dispose()


def test_keys_rotate_publishes_the_new_key(database_url):
    done = run(database_url, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    kid = done.stdout.split()[3].rstrip(";")
    engine = build_engine(Settings(database_url=database_url, _env_file=None))
    try:
        assert kid in {k["kid"] for k in KeyStore(engine).jwks()["keys"]}
    finally:
        engine.dispose()


def test_help_lists_the_authorization_commands():
    done = subprocess.run([sys.executable, "-m", "fhir_server", "--help"], capture_output=True, text=True, timeout=60)
    assert all(word in done.stdout for word in ("clients", "users", "token", "keys"))


def test_a_supervisor_is_registered_with_the_organisations_they_report_on(database_url):
    username = unique("supervisor")
    added = run(
        database_url,
        *("users", "add", username, "--fhir-user", "Practitioner/7", "--password-stdin"),
        *("--supervises", "Organization/clinic-1", "--supervises", "Organization/program-2"),
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    assert "Organization/clinic-1, Organization/program-2" in added.stdout
    listed = [line for line in run(database_url, "users", "list").stdout.splitlines() if line.startswith(username)]
    assert listed and "supervises=Organization/clinic-1,Organization/program-2" in listed[0]
    assert run(database_url, "users", "supervise", username, "Organization/clinic-3").returncode == 0
    listed = [line for line in run(database_url, "users", "list").stdout.splitlines() if line.startswith(username)]
    assert "supervises=Organization/clinic-3\t" in listed[0]
    assert run(database_url, "users", "supervise", username).returncode == 0  # none: runs no reports
    assert "supervises=-" in run(database_url, "users", "list").stdout.split(username, 1)[1].splitlines()[0]
    wrong = run(database_url, "users", "supervise", username, "Practitioner/1")
    assert wrong.returncode == 1 and "--supervises must be like Organization/123" in wrong.stderr
    assert run(database_url, "users", "supervise", unique("nobody"), "Organization/1").returncode == 1

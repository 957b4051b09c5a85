"""bench/core.py's reads by id: authorization off, with a bearer token (access checks and an AuditEvent per read),
and the bare FastAPI + psycopg endpoint, in rounds that alternate the code under test with another checkout.

Each code reads its own copy of the same seeded data (two checkouts may migrate to different schema heads). The
token comes from the code's own CLI: a Backend Services client registered with ``fhir-server clients add`` and a
token printed by ``fhir-server token``, as an integrator would get one.  After each authorized measurement the
server is stopped (SIGTERM, which stores the audit records still queued) and the AuditEvents counted: one per
read answered, or the run says how many are missing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import start_bare_app, start_server

CLIENT_ID = "bench-reader"


def _public_jwks() -> str:
    """A throwaway Backend Services key's public JWKS (the private half is never used: the CLI mints the token)."""
    numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(48, "big")).rstrip(b"=").decode()

    key = {"kty": "EC", "crv": "P-384", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "bench", "alg": "ES384"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"keys": [key]}, handle)
    return handle.name


def _cli(code: Path, database_url: str, *args: str) -> str:
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-m", "fhir_server", *args], env=env, cwd=code, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"fhir-server {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def backend_token(code: Path, database_url: str, server_root: str) -> str:
    """A system/*.rs token for the server at ``server_root`` (registering the client on first use)."""
    listed = _cli(code, database_url, "clients", "list")
    if CLIENT_ID not in listed:
        jwks = _public_jwks()
        try:
            _cli(code, database_url, "clients", "add", "--name", "bench reader", "--client-id", CLIENT_ID,
                 "--scope", "system/*.rs", "--jwks-file", jwks)  # fmt: skip
        finally:
            os.unlink(jwks)
    printed = _cli(code, database_url, "token", "--client-id", CLIENT_ID, "--scope", "system/*.rs",
                   "--lifetime", "3600", "--base-url", server_root)  # fmt: skip
    return printed.strip().split()[-1]


def audit_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM resources WHERE resource_type = 'AuditEvent'").fetchone()[0]


def read_round(
    code: Path,
    database_url: str,
    ids: list[str],
    *,
    workers: int,
    duration: int,
    connections: int,
    throughput: Callable[..., dict],
    latency: Callable[..., dict],
) -> dict:
    """One code's reads: authorization off, then on (throughput, then latency at half that rate)."""
    with start_server(database_url, workers, code=code) as server:
        throughput(server.root, ids, 3, connections)
        off = throughput(server.root, ids, duration, connections)
    before = audit_count(database_url)
    with start_server(database_url, workers, code=code, FHIR_SERVER_AUTH_REQUIRED="true") as server:
        token = backend_token(code, database_url, server.root)
        warm = throughput(server.root, ids, 3, connections, token)
        on = throughput(server.root, ids, duration, connections, token)
        late = latency(server.port, ids, on["rate"] / 2, duration, token)
    answered = warm["requests"] + on["requests"] + late["requests"]
    audited = audit_count(database_url) - before  # the server has stopped: its queue is drained
    return {"off": off, "on": on, "latency": late, "reads": answered, "audited": audited}


def bare_round(database_url: str, ids: list[str], *, workers: int, duration: int, connections: int,
               throughput: Callable[..., dict]) -> dict:  # fmt: skip
    with start_bare_app(database_url, workers) as bare:
        throughput(bare.root, ids, 3, connections)
        return throughput(bare.root, ids, duration, connections)

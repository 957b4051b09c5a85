"""Processes for the write-back tests: our server, the EHR (a second instance of this server, with its own
database and authorization server) and the fault proxy between them, each started as its own process."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_server.auth.keys import generate_key
from tests.support.process import ROOT, ServerProcess, cli, environment, wait_until_up
from tests.support.server import free_port

# Short delays so the fault tests take seconds; the logic is the production one.
OUR_SETTINGS = {
    "FHIR_SERVER_AUTH_REQUIRED": "false",
    "FHIR_SERVER_OUTBOX_POLL_SECONDS": "0.1",
    "FHIR_SERVER_OUTBOX_TIMEOUT_SECONDS": "1.5",
    "FHIR_SERVER_OUTBOX_BASE_DELAY_SECONDS": "0.2",
    "FHIR_SERVER_OUTBOX_MAX_DELAY_SECONDS": "1.0",
    "FHIR_SERVER_OUTBOX_MAX_ATTEMPTS": "40",
    "FHIR_SERVER_OUTBOX_LEASE_SECONDS": "8",
    "FHIR_SERVER_LOG_LEVEL": "info",
}


class EhrProcess(ServerProcess):
    """The EHR: authorization required, with the instrument library as any instance of this server has it (so a
    response written back to it is one it could score: it must not score it again), a reader client for the
    tests' own look-ups."""

    READER = "test-reader"

    def __init__(self, folder: Path) -> None:
        env = {
            "FHIR_SERVER_AUTH_REQUIRED": "true",
            "FHIR_SERVER_OUTBOX_WORKER": "false",
            "FHIR_SERVER_LOG_LEVEL": "warning",
        }
        super().__init__(f"sqlite:///{folder / 'ehr.db'}", folder, "ehr", env)
        self._token: str | None = None

    def start(self, **overrides: str) -> None:
        done = cli(self.database_url, "db", "upgrade")
        assert done.returncode == 0, done.stderr
        # The tests' own client (a Backend Services client; its tokens are minted with ``fhir-server token``).
        jwks = self.log.parent / "reader-jwks.json"
        jwks.write_bytes(orjson.dumps({"keys": [generate_key().as_dict(private=False)]}))
        added = self.admin(
            "clients", "add", "--name", "tests", "--client-id", self.READER, "--scope", "system/*.cruds",
            "--jwks-file", str(jwks),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        super().start(**overrides)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.database_url, *args, env=self.env)

    def register_backend_client(self, client_id: str, jwks_url: str, scope: str) -> None:
        """Our server as a Backend Services client of the EHR, its keys fetched from our /auth/jwks."""
        done = self.admin(
            "clients", "add", "--name", client_id, "--client-id", client_id, "--jwks-url", jwks_url, "--scope", scope
        )
        assert done.returncode == 0, done.stderr

    def mint(self, scope: str, root: str) -> str:
        """An access token the EHR issued (to the tests' client), for requests that reach it at ``root``."""
        minted = self.admin(
            "token", "--client-id", self.READER, "--scope", scope, "--lifetime", "3600", "--base-url", root
        )
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()

    def client(self) -> httpx.Client:
        if self._token is None:
            self._token = self.mint("system/*.cruds", self.root)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/fhir+json"}
        return httpx.Client(base_url=self.fhir_base, headers=headers, timeout=30)


class FaultProxy:
    """tests/ehr/faults.py as a process in front of ``upstream``."""

    def __init__(self, upstream: str, folder: Path) -> None:
        self.port, self.control_port = free_port(), free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.control = f"http://127.0.0.1:{self.control_port}"
        self.log_file = folder / f"proxy-{self.port}.log"
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.ehr.faults", "--port", str(self.port)),
                    *("--control-port", str(self.control_port), "--upstream", upstream),
                ],
                env=environment(),
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        wait_until_up(f"{self.control}/log", self.process, self.log_file, timeout=30)

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"

    def plan(self, *rules: dict[str, Any], hide_transaction: bool = False, hide_conditional: bool = False) -> None:
        body = {"rules": list(rules), "hide_transaction": hide_transaction, "hide_conditional": hide_conditional}
        httpx.post(f"{self.control}/plan", json=body, timeout=10).raise_for_status()

    def down(self, seconds: float) -> None:
        httpx.post(f"{self.control}/down", json={"seconds": seconds}, timeout=10).raise_for_status()

    def up(self) -> None:
        httpx.post(f"{self.control}/up", json={}, timeout=10).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Everything the proxy saw, in order of arrival."""
        return sorted(httpx.get(f"{self.control}/log", timeout=10).json()["requests"], key=lambda r: r["t"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def temp_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="fhir-ehr-test-")


def fhir_json(value: Any) -> dict[str, Any]:
    return {"content": orjson.dumps(value), "headers": {"Content-Type": "application/fhir+json"}}

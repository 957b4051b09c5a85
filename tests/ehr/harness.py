"""Processes for the write-back tests: our server, the EHR (a second instance of this server, with its own
database and authorization server) and the fault proxy between them, each started as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_server.auth.keys import generate_key
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]

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


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_SERVER_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def cli(database_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fhir-server ARGS`` against a database, as an administrator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *args],
        env=_environment(FHIR_SERVER_DATABASE_URL=database_url, **(env or {})),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"process did not start: {log.read_text()[-2000:] if log.exists() else ''}")
        time.sleep(0.2)


class ServerProcess:
    """``fhir-server serve`` on its own port; stderr goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, database_url: str, folder: Path, name: str, env: dict[str, str]) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"

    def start(self, **overrides: str) -> None:
        environment = _environment(FHIR_SERVER_DATABASE_URL=self.database_url, **{**self.env, **overrides})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fhir_server", "serve", "--port", str(self.port)],
                env=environment,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        _wait_until_up(f"{self.fhir_base}/metadata", self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, exactly like a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


class EhrProcess(ServerProcess):
    """The EHR: authorization required, a plain FHIR store (no instrument library, so it stores what it gets
    without scoring it again), a reader client for the tests' own look-ups."""

    READER = "test-reader"

    def __init__(self, folder: Path) -> None:
        env = {
            "FHIR_SERVER_AUTH_REQUIRED": "true",
            "FHIR_SERVER_LIBRARY_DIRS": "",
            "FHIR_SERVER_LOAD_LIBRARY": "false",
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
                env=_environment(),
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        _wait_until_up(f"{self.control}/log", self.process, self.log_file, timeout=30)

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"

    def plan(self, *rules: dict[str, Any], hide_transaction: bool = False) -> None:
        body = {"rules": list(rules), "hide_transaction": hide_transaction}
        httpx.post(f"{self.control}/plan", json=body, timeout=10).raise_for_status()

    def down(self, seconds: float) -> None:
        httpx.post(f"{self.control}/down", json={"seconds": seconds}, timeout=10).raise_for_status()

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

"""This server started as its own process (``fhir-server serve``): the EHR, an identity provider or any second
instance in tests.  The environment is the test run's minus its FHIR_SERVER_* settings (but its secret key), so each
process gets exactly the settings its test names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


# Kept: the run's secret key (tests/conftest.py), which every process on the run's databases must share.
INHERITED = ("FHIR_SERVER_SECRET_KEY",)


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_SERVER_") or k in INHERITED}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def cli(database_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fhir-server ARGS`` against a database, as an administrator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *args],
        env=environment(FHIR_SERVER_DATABASE_URL=database_url, **(env or {})),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
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
        settings = environment(FHIR_SERVER_DATABASE_URL=self.database_url, **{**self.env, **overrides})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fhir_server", "serve", "--port", str(self.port)],
                env=settings,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        wait_until_up(f"{self.fhir_base}/metadata", self.process, self.log)

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


@contextmanager
def server_process(database_url: str, **env: str) -> Iterator[ServerProcess]:
    """A migrated database and the server on it, stopped at the end."""
    done = cli(database_url, "db", "upgrade")
    if done.returncode != 0:
        raise RuntimeError(f"db upgrade failed: {done.stderr[-2000:]}")
    with tempfile.TemporaryDirectory(prefix="fhir-process-") as folder:
        server = ServerProcess(database_url, Path(folder), "server", {"FHIR_SERVER_LOG_LEVEL": "warning", **env})
        server.start()
        try:
            yield server
        finally:
            server.stop()

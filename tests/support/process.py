"""This server started as its own process (``fhir-server serve``), as an EHR or any second instance in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.support.server import free_port


@dataclass
class ServerProcess:
    root: str
    database_url: str
    process: subprocess.Popen

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"


@contextmanager
def server_process(database_url: str, **env: str) -> Iterator[ServerProcess]:
    environment = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url, "FHIR_SERVER_LOG_LEVEL": "warning", **env}
    subprocess.run(
        [sys.executable, "-m", "fhir_server", "db", "upgrade"], env=environment, check=True, capture_output=True
    )
    port = free_port()
    # a file, not a pipe: a pipe nobody reads would block a chatty server
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the process ends
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port)],
        env=environment,
        stdout=log,
        stderr=log,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{root}/fhir/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"server process did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.2)
        yield ServerProcess(root, database_url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

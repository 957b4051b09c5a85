"""A real HTTP server (uvicorn on a loopback port) around create_app, run in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.store.migrate import upgrade


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    app: FastAPI
    settings: Settings
    root: str  # http://127.0.0.1:PORT
    backend: str

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"


class ServerThread:
    def __init__(self, settings: Settings, backend: str, port: int | None = None) -> None:
        upgrade(settings.database_url)
        self.app = create_app(settings)
        self.port = port or free_port()  # chosen by the caller when its URL must be known before the app is made
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.running = RunningServer(self.app, settings, f"http://127.0.0.1:{self.port}", backend)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self.running

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.read_engine.dispose()
        self.app.state.engine.dispose()

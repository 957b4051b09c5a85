"""A real rest-hook receiver for the tests: an HTTP server on a loopback port in its own thread, recording every
notification Bundle it is sent.  It can answer 500 (``failing``), or be taken down and brought back up on the same
port (``down`` / ``up``: connections are refused meanwhile)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.server import free_port


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failing = False  # answer 500 to every notification
        self.retry_after: str | None = None  # sent with the 500s
        self.fail_next = 0  # answer this many more notifications with 503 (and ``retry_after``)
        self.attempts: list[float] = []  # when each notification arrived (monotonic), answered or not
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts.append(time.monotonic())
                if receiver.failing or receiver.fail_next > 0:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    self.send_response(500 if receiver.failing else 503)
                    if receiver.retry_after:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bundles(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self.received)
        return [b for b in found if kind is None or notification_type(b) == kind]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"the receiver did not get what was expected: {self.received}"
            time.sleep(0.05)


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The SubscriptionStatus parameters of a notification, by name (notification-event: a list of parts)."""
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters"
    out: dict[str, Any] = {"notification-event": []}
    for p in first["parameter"]:
        if p["name"] == "notification-event":
            out["notification-event"].append({part["name"]: _value(part) for part in p["part"]})
        else:
            out[p["name"]] = _value(p)
    return out


def _value(p: dict[str, Any]) -> Any:
    return next(v for k, v in p.items() if k.startswith("value"))


def notification_type(bundle: dict[str, Any]) -> str:
    return status_of(bundle)["type"]


def event_numbers(bundles: list[dict[str, Any]]) -> list[int]:
    return [int(e["event-number"]) for b in bundles for e in status_of(b)["notification-event"]]

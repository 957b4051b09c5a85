"""An SMS gateway stand-in for tests, as its own process (stdlib http.server): each POST to ``/send`` is recorded
(its body, its Authorization and Content-Type headers, the status answered) as a JSON file in a folder the test
reads, and answered 200 {"id": ...}; told to (``fail(n)``), it answers the next ``n`` POSTs 503 instead.

Run: ``python -m tests.support.sms_gateway --port P --folder DIR``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class SmsGateway:
    """The gateway process, controlled from the test."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder / f"sms-{port}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/send"
        self.log = folder / f"sms-gateway-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.support.sms_gateway", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([*command, "--folder", str(self.folder)], cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SMS gateway did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def fail(self, count: int) -> None:
        """Answer the next ``count`` POSTs to /send with 503."""
        httpx.post(f"http://127.0.0.1:{self.port}/fail", json={"count": count}, timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Every POST to /send, in order of arrival: body (text), authorization, content_type, status."""
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

    def delivered(self) -> list[dict[str, Any]]:
        """The accepted ones, bodies parsed."""
        return [{**r, "json": json.loads(r["body"])} for r in self.requests() if r["status"] == 200]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", required=True)
    args = parser.parse_args()
    folder = Path(args.folder)
    state = {"fail": 0, "count": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            content = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/health" else 404, {})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/fail":
                with lock:
                    state["fail"] = int(json.loads(body)["count"])
                self._answer(200, {})
                return
            if self.path != "/send":
                self._answer(404, {})
                return
            with lock:
                state["count"] += 1
                number = state["count"]
                failing = state["fail"] > 0
                state["fail"] -= 1 if failing else 0
            status = 503 if failing else 200
            record = {
                "body": body.decode("utf-8"),
                "authorization": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "status": status,
            }
            name = f"{number:06d}-{uuid.uuid4().hex[:8]}.json"
            (folder / f"{name}.tmp").write_text(json.dumps(record))
            (folder / f"{name}.tmp").rename(folder / name)
            self._answer(status, {"error": "unavailable"} if failing else {"id": uuid.uuid4().hex})

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

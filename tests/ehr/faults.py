"""A fault-injecting HTTP proxy for the write-back tests, run as its own process between our server and the EHR:

    python -m tests.ehr.faults --port P --control-port C --upstream http://127.0.0.1:E

It forwards every request (keeping the Host header, so the EHR's links and token audiences name the proxy, as
behind any reverse proxy) unless the plan says otherwise.  The plan is a list of rules, each consumed by the
requests it matches, in order:

    {"action": "status", "status": 503, "count": 2}                      answer 503 twice
    {"action": "status", "status": 429, "retry_after": 2}                429 with Retry-After: 2
    {"action": "status", "status": 503, "retry_after_date": 3}           Retry-After as an HTTP-date 3 s ahead
    {"action": "hang", "seconds": 4}                                     accept, answer nothing, close after 4 s
    {"action": "drop"}                                                   forward, then close without an answer
    optional on any rule: "method": "POST", "path": "/fhir" (prefix)     which requests the rule applies to

Control endpoints (on the control port): POST /plan {"rules": [...], "hide_transaction": bool, "hide_conditional":
bool} replaces the plan (hide_transaction strips "transaction" from the EHR's CapabilityStatement,
hide_conditional its conditionalCreate/conditionalUpdate: the EHR then looks like one that offers neither);
POST /down {"seconds": s} closes the listening socket (connections are refused) and reopens it after s seconds;
GET /log returns every request seen, with the wall-clock time it arrived and, for Retry-After answers, the
earliest time a retry was allowed.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade"}


class State:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.hide_transaction = False
        self.hide_conditional = False
        self.log: list[dict[str, Any]] = []
        self.client = httpx.Client(timeout=60)

    def take_rule(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("path") and not path.startswith(rule["path"]):
                    continue
                rule["count"] = rule.get("count", 1) - 1
                if rule["count"] <= 0:
                    self.rules.remove(rule)
                return dict(rule)
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)


class ProxyHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so "down" refuses every later request instead of reusing a socket.
    protocol_version = "HTTP/1.0"
    state: State

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = self.state.take_rule(self.command, self.path)
        entry: dict[str, Any] = {"t": arrived, "method": self.command, "path": self.path}
        if self.headers.get("if-none-exist"):
            entry["if_none_exist"] = self.headers["if-none-exist"]
        action = rule["action"] if rule else "forward"
        entry["action"] = action
        # Every entry is logged before anything goes back to the client, so the log is in causal order.
        if action == "status":
            self._answer_status(rule or {}, entry)
        elif action == "hang":
            self.state.record(entry)
            time.sleep(float((rule or {}).get("seconds", 5)))
            self.close_connection = True
        else:
            upstream = self._forward(body)
            entry["status"] = upstream.status_code
            self.state.record(entry)
            if action == "drop":  # the EHR has done the work; the answer is lost on the way back
                self.close_connection = True
                return
            self._relay(upstream)

    def _answer_status(self, rule: dict[str, Any], entry: dict[str, Any]) -> None:
        status = int(rule.get("status", 503))
        entry["status"] = status
        headers = {"Content-Type": "application/fhir+json"}
        sent = time.time()  # before the answer leaves: the client cannot act on it any earlier
        if "retry_after" in rule:
            headers["Retry-After"] = str(int(rule["retry_after"]))
            entry["not_before"] = sent + int(rule["retry_after"])
        elif "retry_after_date" in rule:
            when = int(sent + float(rule["retry_after_date"])) + 1  # whole seconds, never earlier than asked
            headers["Retry-After"] = formatdate(when, usegmt=True)
            entry["not_before"] = float(when)
        self.state.record(entry)
        code = "transient" if status >= 500 else "throttled" if status == 429 else "invalid"
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}
        data = json.dumps(outcome).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, body: bytes) -> httpx.Response:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"accept-encoding"}}
        return self.state.client.request(self.command, self.state.upstream + self.path, headers=headers, content=body)

    def _relay(self, upstream: httpx.Response) -> None:
        data = upstream.content
        if self.command == "GET" and self.path.split("?")[0].endswith("/metadata"):
            data = _hidden(data, self.state.hide_transaction, self.state.hide_conditional)
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.multi_items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def _hidden(data: bytes, transaction: bool, conditional: bool) -> bytes:
    if not (transaction or conditional):
        return data
    statement = json.loads(data)
    for rest in statement.get("rest", []):
        if transaction:
            rest["interaction"] = [i for i in rest.get("interaction", []) if i.get("code") != "transaction"]
        for resource in rest.get("resource", []) if conditional else []:
            resource.pop("conditionalCreate", None)
            resource.pop("conditionalUpdate", None)
    return json.dumps(statement).encode()


class Proxy:
    def __init__(self, port: int, state: State) -> None:
        self.port = port
        self.state = state
        self.handler = type("Handler", (ProxyHandler,), {"state": state})
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def up(self) -> None:
        with self.lock:
            if self.server is not None:  # already up (the timer and an explicit /up both bring it back)
                return
            server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.server = server

    def down(self, seconds: float) -> None:
        with self.lock:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server = None
        self.state.record({"t": time.time(), "method": "-", "path": "-", "action": "down", "seconds": seconds})
        self.timer = threading.Timer(seconds, self.back)
        self.timer.daemon = True
        self.timer.start()

    def back(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.server is not None:
            return
        self.up()
        self.state.record({"t": time.time(), "method": "-", "path": "-", "action": "up"})


def control_handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Control(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _reply(self, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with proxy.state.lock:
                self._reply({"requests": list(proxy.state.log)})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            command = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/plan":
                with proxy.state.lock:
                    proxy.state.rules = list(command.get("rules", []))
                    proxy.state.hide_transaction = bool(command.get("hide_transaction", False))
                    proxy.state.hide_conditional = bool(command.get("hide_conditional", False))
            elif self.path == "/down":
                proxy.down(float(command.get("seconds", 1)))
            elif self.path == "/up":  # back before the down's time runs out
                proxy.back()
            self._reply({"ok": True})

    return Control


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    proxy = Proxy(args.port, State(args.upstream))
    proxy.up()
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), control_handler(proxy))
    control.serve_forever()


if __name__ == "__main__":
    main()

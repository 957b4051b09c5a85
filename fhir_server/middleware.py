"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request): request ids and access logs, and
the client address and scheme behind trusted proxies (TrustedProxyHeaders).

Access logs carry method, path without the query string (queries can hold patient data), status and duration.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.activity import REQUESTS
from fhir_server.api.error_handlers import internal_error_response

access_log = logging.getLogger("fhir_server.access")


# A request id needs to be unique, not secret: a random prefix per process and a counter, instead of a uuid4 per
# request (os.urandom, a system call, measurable on a read by id).  A forked worker draws its own prefix.
_ids: tuple[int, str, Iterator[int]] = (0, "", itertools.count())


def _new_request_id() -> str:
    global _ids
    pid, prefix, numbers = _ids
    if pid != os.getpid():
        pid, prefix, numbers = _ids = (os.getpid(), uuid.uuid4().hex[:16], itertools.count(1))
    return f"{prefix}{next(numbers):016x}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # never a stack trace to the client, and the connection stays open
            if "started" in status:
                raise
            await internal_error_response(request_id, exc)(scope, receive, send_with_id)
        finally:
            REQUESTS.ended(time.perf_counter() - started)  # background work yields to requests (activity.py)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status["code"],
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
            text = value.decode()
            if all(ch.isalnum() or ch in "-_." for ch in text):
                return text
    return None


# Headers by which a proxy reports the original client.  From a peer that is not a trusted proxy they are the
# client's own claims: removed, so that no code (ours now, or a library later) can mistake them for facts.
_PROXY_HEADERS = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"forwarded", b"x-real-ip"}
)
_SCHEMES = {"http", "https"}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxyHeaders:
    """The one place the client's address and scheme are decided (FHIR_SERVER_TRUSTED_PROXIES).

    Everything downstream reads ``scope["client"]`` and ``scope["scheme"]`` (Starlette's ``request.client`` and
    ``request.url``): the sign-in throttle's per-address count, the client address in AuditEvents, https detection
    for the login cookie, the origin derived from the request.  Only when the direct peer is a configured proxy
    are ``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed; with none configured (the default) they are
    ignored from every peer, loopback included.  ``X-Forwarded-For`` is read from the right: each trusted proxy
    appends the address it saw, so the right-most address that is not a trusted proxy is the client, and anything
    left of it is what the client itself wrote.  ``Forwarded`` (RFC 7239) is never read: a proxy that appends
    ``X-Forwarded-For`` usually passes a client's ``Forwarded`` through untouched, so honouring both would let the
    client choose.  uvicorn's own proxy handling must be off (serving.py), or it rewrites the client first.
    """

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            if any(name in _PROXY_HEADERS for name, _ in headers):
                peer = scope.get("client")
                address = _address(peer[0]) if peer else None
                if address is not None and self.networks and self.trusts(address):
                    self._apply(scope, headers, address)
                else:
                    scope["headers"] = [(name, value) for name, value in headers if name not in _PROXY_HEADERS]
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope, headers: list[tuple[bytes, bytes]], peer: Address) -> None:
        hops: list[str] = []
        protos: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                hops += value.decode("latin-1").split(",")
            elif name == b"x-forwarded-proto":
                protos += value.decode("latin-1").split(",")
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # garbage where a proxy should have written an address: keep the proxy's
                break
            client = address
            if not self.trusts(address):
                break
        if client != peer:
            scope["client"] = (str(client), 0)
        # the right-most value is the one our direct peer, a trusted proxy, set
        proto = protos[-1].strip().lower() if protos else ""
        if proto in _SCHEMES:
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")


def _address(text: str) -> Address | None:
    """An address from a peer or an X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]:5678``); IPv4-mapped IPv6 as IPv4, so ``127.0.0.1`` also matches a dual-stack socket's peer."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address

"""Browser-facing safety headers (issue 6 point 5), as a pure ASGI middleware.

Pages (everything under /auth/ and /static/): ``Content-Security-Policy`` that loads nothing but our own style
sheet and may be framed only by this server and the EHR origins in FHIR_SERVER_FRAME_ANCESTORS (the pages run in
EHR iframes); ``X-Content-Type-Options: nosniff``; ``Referrer-Policy: no-referrer`` (authorization URLs carry
codes and state).  There is deliberately no ``form-action``: browsers apply it to the redirect that follows the
sign-in POST, and that redirect goes to the app's registered redirect URI.

CORS: the token, introspection, revocation, JWKS and discovery endpoints and the FHIR API under /fhir (a browser
SMART app calls it with its bearer token), and only for origins registered with a client.  No credentials
(cookies) are allowed: the API authenticates with the Authorization header only.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_PREFIXES = ("/auth/", "/static/")
CORS_PATHS = frozenset(
    {
        "/auth/token",
        "/auth/introspect",
        "/auth/revoke",
        "/auth/jwks",
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
        "/.well-known/openid-configuration",
        "/auth/.well-known/openid-configuration",
    }
)
CORS_MAX_AGE = "600"
FHIR_PREFIX = "/fhir/"
# what a browser app may send to and read from the FHIR API
FHIR_METHODS = b"GET, POST, PUT, PATCH, DELETE"
FHIR_REQUEST_HEADERS = b"Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, Prefer"
FHIR_EXPOSED_HEADERS = b"ETag, Location, Content-Location, Last-Modified, X-Request-Id"


class BrowserSecurityMiddleware:
    def __init__(self, app: ASGIApp, frame_ancestors: list[str], origin_allowed: Callable[[str], bool]) -> None:
        self.app = app
        self.origin_allowed = origin_allowed
        ancestors = " ".join(["'self'", *frame_ancestors])
        policy = f"default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors {ancestors}"
        self.page_headers = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        page = path.startswith(PAGE_PREFIXES)
        fhir_api = path.startswith(FHIR_PREFIX) or path == "/fhir"
        cors_path = path in CORS_PATHS or fhir_api
        if not page and not cors_path:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = bool(cors_path and origin and await run_in_threadpool(self.origin_allowed, origin))
        if allowed and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(send, origin or "", fhir_api)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = message.setdefault("headers", [])
                if page:
                    extra.extend(self.page_headers)
                if cors_path:
                    extra.append((b"vary", b"Origin"))
                if allowed:
                    extra.append((b"access-control-allow-origin", (origin or "").encode()))
                    if fhir_api:
                        extra.append((b"access-control-expose-headers", FHIR_EXPOSED_HEADERS))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(self, send: Send, origin: str, fhir_api: bool) -> None:
        headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", FHIR_METHODS if fhir_api else b"GET, POST"),
            (b"access-control-allow-headers", FHIR_REQUEST_HEADERS if fhir_api else b"Authorization, Content-Type"),
            (b"access-control-max-age", CORS_MAX_AGE.encode()),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

"""Helpers for the external-identity-provider tests: the provider is a second instance of this server (its own
database), reached through a relay the tests can arm to play a man in the middle of the token response; a
browser that keeps one cookie jar per site (every test server is on 127.0.0.1, and real browsers do not separate
cookies by port: without this, two servers' session cookies would overwrite each other)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tests.auth.smart_support import PASSWORD, csrf_of, pkce, query_of
from tests.support.server import free_port

IDP_SCOPE = "openid fhirUser profile"
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


def cli(database_url: str, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``fhir-server …`` as an operator runs it against a server's database (``env``: more settings)."""
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": database_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def printed(output: str, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(f"{name}: "))


class Relay:
    """Forwards every request to ``upstream``; when ``id_token`` is set, puts it into the next token responses
    instead of the one the provider issued (a man in the middle of the token endpoint)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.id_token: str | None = None
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        query = f"?{request.url.query}" if request.url.query else ""
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS]
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(
                request.method,
                f"{self.upstream}{request.url.path}{query}",
                content=await request.body(),
                headers=headers,
            )
        content = answer.content
        if request.url.path == "/auth/token" and self.id_token and answer.status_code == 200:
            content = orjson.dumps({**answer.json(), "id_token": self.id_token})
        response = Response(content, status_code=answer.status_code)
        response.raw_headers = [h for h in response.raw_headers if h[0] == b"content-length"] + [
            (k.encode(), v.encode()) for k, v in answer.headers.multi_items() if k.lower() not in HOP_HEADERS
        ]
        await response(scope, receive, send)

    def __enter__(self) -> Relay:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("relay did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Sites:
    """A browser: one cookie jar per origin, no automatic redirects (tests read each Location)."""

    def __init__(self) -> None:
        self.clients: dict[str, httpx.Client] = {}

    def _client(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.clients:
            self.clients[origin] = httpx.Client(follow_redirects=False, timeout=30)
        return self.clients[origin]

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._client(url).get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._client(url).post(url, **kwargs)

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code in (302, 303), f"{response.status_code}: {response.text[:500]}"
        return self.get(urljoin(str(response.url), response.headers["location"]))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def sign_in_at_provider(sites: Sites, authorize_url: str, username: str, password: str = PASSWORD) -> str:
    """From the provider's authorization URL to the redirect it answers after the user signs in there."""
    to_login = sites.get(authorize_url)
    assert to_login.status_code == 302 and to_login.headers["location"] == "/auth/login", to_login.text[:500]
    login_url = urljoin(authorize_url, "/auth/login")
    page = sites.get(login_url)
    assert page.status_code == 200, page.text[:500]
    form = {"csrf_token": csrf_of(page.text), "username": username, "password": password, "action": "login"}
    answer = sites.post(login_url, data=form)
    assert answer.status_code == 303, answer.text[:500]
    return answer.headers["location"]


def cancel_at_provider(sites: Sites, authorize_url: str) -> str:
    sites.get(authorize_url)
    login_url = urljoin(authorize_url, "/auth/login")
    page = sites.get(login_url)
    answer = sites.post(login_url, data={"csrf_token": csrf_of(page.text), "action": "cancel"})
    assert answer.status_code == 303, answer.text[:500]
    return answer.headers["location"]


def genuine_id_token(
    provider_root: str, client_id: str, secret: str, redirect_uri: str, username: str, nonce: str
) -> str:
    """An id_token the provider really issues (to ``client_id``, for ``username``, carrying ``nonce``)."""
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": IDP_SCOPE,
        "state": secrets.token_urlsafe(16),
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    sites = Sites()
    try:
        authorize = str(httpx.URL(f"{provider_root}/auth/authorize", params=params))
        code = query_of(sign_in_at_provider(sites, authorize, username))["code"]
    finally:
        sites.close()
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    answer = httpx.post(f"{provider_root}/auth/token", data=data, auth=(client_id, secret), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["id_token"]


def page_text(response: httpx.Response) -> str:
    """The visible text of a page (tags dropped, whitespace collapsed), for asserting on messages."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.text).split()).replace("&#39;", "'")

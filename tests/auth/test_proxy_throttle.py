"""Proxy headers are believed only from FHIR_SERVER_TRUSTED_PROXIES (issue 15, finding 8: uvicorn believed
X-Forwarded-For from loopback, so a new header value on each guess escaped the per-address sign-in limit).

The server runs as ``fhir-server serve`` (its own process, the way it is deployed), on the test's database.  By
default every guess from 127.0.0.1 counts against 127.0.0.1 whatever X-Forwarded-For says, and the audit records
the connection's address; with FHIR_SERVER_TRUSTED_PROXIES=127.0.0.1 the forwarded address is the client's, so
different forwarded clients are throttled separately and an address the client prepends itself changes nothing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, delete, select

from fhir_server.store.migrate import upgrade
from fhir_server.store.tables import oauth_login_failures, resources
from tests.support.process import ServerProcess, server_process

PER_ADDRESS = 3
SETTINGS = {
    "FHIR_SERVER_AUTH_REQUIRED": "true",
    "FHIR_SERVER_LOAD_LIBRARY": "false",
    "FHIR_SERVER_LOGIN_MAX_FAILURES_PER_ADDRESS": str(PER_ADDRESS),
    "FHIR_SERVER_LOGIN_MAX_FAILURES_PER_USER": "100",  # only the address limit is under test
}


@pytest.fixture
def fresh_counts(database_url: str) -> Iterator[None]:
    """Every test server sits on 127.0.0.1: these failures must not throttle other tests on the database."""
    upgrade(database_url)  # the table may not be there yet: server_process migrates only when it starts
    engine = create_engine(database_url)

    def forget() -> None:
        with engine.begin() as conn:
            conn.execute(delete(oauth_login_failures))

    forget()
    yield
    forget()
    engine.dispose()


def new_address() -> str:
    """A made-up client address (TEST-NET-2), different on every call."""
    number = uuid.uuid4().int
    return f"198.51.{number % 256}.{(number >> 8) % 254 + 1}"


def sign_in(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
    """A failed sign-in with an unknown username, every request carrying ``headers``."""
    with httpx.Client(base_url=server.root, headers=headers, follow_redirects=False, timeout=30) as browser:
        page = browser.get("/auth/login")
        assert page.status_code == 200, page.text[:300]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text[:300]
        form = {"csrf_token": csrf.group(1), "username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "guess"}
        return browser.post("/auth/login", data=form)


def assert_throttled(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text[:300]
    assert int(answer.headers["retry-after"]) >= 1


def audited_addresses(database_url: str, candidates: list[str]) -> set[str]:
    """Which of ``candidates`` appear as the network address of a stored AuditEvent (written in batches)."""
    engine = create_engine(database_url)
    try:
        found: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(select(resources.c.content).where(resources.c.resource_type == "AuditEvent"))
                texts = [row.content or "" for row in rows]
            found = {a for a in candidates if any(f'"address":"{a}"' in t.replace(" ", "") for t in texts)}
            if found:
                return found
            time.sleep(0.3)
        return found
    finally:
        engine.dispose()


def test_by_default_a_new_forwarded_address_per_guess_does_not_escape_the_limit(database_url, fresh_counts):
    with server_process(database_url, **SETTINGS) as server:
        spoofed = []
        for _ in range(PER_ADDRESS):
            spoofed.append(new_address())
            answer = sign_in(server, {"X-Forwarded-For": spoofed[-1]})
            assert answer.status_code == 401, answer.text[:300]
        assert_throttled(sign_in(server, {"X-Forwarded-For": new_address()}))
        assert_throttled(sign_in(server, {"Forwarded": f"for={new_address()}"}))
        # nor does the scheme follow X-Forwarded-Proto: plain http keeps the cookie without Secure
        page = httpx.get(f"{server.root}/auth/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        assert "SameSite=Lax" in page.headers["set-cookie"] and "Secure" not in page.headers["set-cookie"]
        found = audited_addresses(database_url, [*spoofed, "127.0.0.1"])
        assert "127.0.0.1" in found and not found & set(spoofed), found


def test_with_a_trusted_proxy_each_forwarded_client_has_its_own_limit(database_url, fresh_counts):
    with server_process(database_url, FHIR_SERVER_TRUSTED_PROXIES="127.0.0.1", **SETTINGS) as server:
        # many clients behind the proxy, one guess each: none is throttled, though the proxy made them all
        clients = [new_address() for _ in range(PER_ADDRESS + 3)]
        for client in clients:
            assert sign_in(server, {"X-Forwarded-For": client}).status_code == 401
        # one client guessing: throttled after the limit, while another is not
        guesser = new_address()
        for _ in range(PER_ADDRESS):
            assert sign_in(server, {"X-Forwarded-For": guesser}).status_code == 401
        assert_throttled(sign_in(server, {"X-Forwarded-For": guesser}))
        # an address the guesser writes in front of the proxy's is not believed: the right-most one counts
        assert_throttled(sign_in(server, {"X-Forwarded-For": f"{new_address()}, {guesser}"}))
        assert sign_in(server, {"X-Forwarded-For": new_address()}).status_code == 401
        # the audit records the forwarded address, and the proxy's X-Forwarded-Proto makes the cookie Secure
        assert audited_addresses(database_url, clients)
        page = httpx.get(f"{server.root}/auth/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        assert "Secure" in page.headers["set-cookie"] and "SameSite=None" in page.headers["set-cookie"]

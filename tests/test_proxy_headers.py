"""middleware.TrustedProxyHeaders (issue 15, finding 8): X-Forwarded-For and X-Forwarded-Proto are believed only
from a peer in FHIR_SERVER_TRUSTED_PROXIES (default none, so not from loopback either); X-Forwarded-For is read
from the right, skipping trusted proxies; Forwarded is never believed.  The end-to-end check, through
``fhir-server serve`` and the sign-in throttle, is tests/auth/test_proxy_throttle.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from fhir_server.config import Settings
from fhir_server.middleware import TrustedProxyHeaders
from fhir_server.serving import serve


def seen(trusted: list[str], peer: str | None, headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, Any]:
    """The scope the app behind the middleware receives."""
    received: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.update(scope)

    pairs = headers.items() if isinstance(headers, dict) else headers
    scope = {
        "type": "http",
        "scheme": "http",
        "client": (peer, 50000) if peer else None,
        "headers": [(k.lower().encode(), v.encode()) for k, v in pairs],
    }
    # On a thread of its own: a browser test earlier in this worker may leave an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, TrustedProxyHeaders(app, trusted)(scope, None, None)).result()
    return received


def client_of(trusted: list[str], peer: str, forwarded_for: str) -> str:
    return seen(trusted, peer, {"X-Forwarded-For": forwarded_for})["client"][0]


SPOOF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Forwarded": "for=203.0.113.9;proto=https"}


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.5"])
def test_by_default_no_peer_is_believed_not_even_loopback(peer):
    scope = seen([], peer, SPOOF)
    assert scope["client"] == (peer, 50000)
    assert scope["scheme"] == "http"
    assert not [name for name, _ in scope["headers"] if name.startswith(b"x-forwarded") or name == b"forwarded"]


def test_a_peer_outside_the_trusted_list_is_not_believed():
    scope = seen(["10.0.0.0/8"], "192.168.1.20", SPOOF)
    assert scope["client"] == ("192.168.1.20", 50000) and scope["scheme"] == "http"


def test_a_trusted_proxy_is_believed():
    scope = seen(["127.0.0.1"], "127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert scope["client"][0] == "203.0.113.9"
    assert scope["scheme"] == "https"


def test_the_right_most_address_that_is_not_a_trusted_proxy_is_the_client():
    trusted = ["10.0.0.0/8", "127.0.0.1"]
    # what the client wrote itself stays on the left and is skipped
    assert client_of(trusted, "127.0.0.1", "1.1.1.1, 198.51.100.7") == "198.51.100.7"
    # a chain of trusted proxies (load balancer 10.0.0.2, then nginx on 127.0.0.1)
    assert client_of(trusted, "127.0.0.1", "1.1.1.1, 198.51.100.7, 10.0.0.2") == "198.51.100.7"
    # the same chain written as several headers
    scope = seen(trusted, "127.0.0.1", [("X-Forwarded-For", "1.1.1.1, 198.51.100.7"), ("X-Forwarded-For", "10.0.0.2")])
    assert scope["client"][0] == "198.51.100.7"
    # ports and IPv6 spellings
    assert client_of(trusted, "127.0.0.1", "198.51.100.7:4711") == "198.51.100.7"
    assert client_of(trusted, "127.0.0.1", "[2001:db8::7]:4711") == "2001:db8::7"
    assert client_of(trusted, "::ffff:127.0.0.1", "2001:db8::7") == "2001:db8::7"
    # every hop trusted: the left-most is as far as anyone can tell
    assert client_of(trusted, "127.0.0.1", "10.1.1.1, 10.0.0.2") == "10.1.1.1"


def test_garbage_where_an_address_belongs_leaves_the_last_trusted_hop():
    trusted = ["10.0.0.0/8", "127.0.0.1"]
    assert client_of(trusted, "127.0.0.1", "198.51.100.7, unknown, 10.0.0.2") == "10.0.0.2"
    assert client_of(trusted, "127.0.0.1", "not an address") == "127.0.0.1"
    assert client_of(trusted, "127.0.0.1", "") == "127.0.0.1"


def test_forwarded_is_never_believed_and_odd_schemes_are_ignored():
    scope = seen(["127.0.0.1"], "127.0.0.1", {"Forwarded": "for=203.0.113.9;proto=https"})
    assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "http"
    assert seen(["127.0.0.1"], "127.0.0.1", {"X-Forwarded-Proto": "javascript"})["scheme"] == "http"
    # the right-most value is the one the trusted peer set
    assert seen(["127.0.0.1"], "127.0.0.1", {"X-Forwarded-Proto": "http, https"})["scheme"] == "https"


def test_the_setting_takes_a_list_and_refuses_what_is_not_an_address(monkeypatch):
    monkeypatch.setenv("FHIR_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1")
    assert Settings(_env_file=None).trusted_proxies == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    monkeypatch.setenv("FHIR_SERVER_TRUSTED_PROXIES", '["192.168.0.1"]')
    assert Settings(_env_file=None).trusted_proxies == ["192.168.0.1/32"]
    monkeypatch.delenv("FHIR_SERVER_TRUSTED_PROXIES")
    assert Settings(_env_file=None).trusted_proxies == []
    for bad in ("*", "proxy.example", "10.0.0.0/33"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, trusted_proxies=bad)


def test_serve_turns_uvicorns_own_proxy_handling_off(monkeypatch):
    """uvicorn's would believe X-Forwarded-For from 127.0.0.1 before the app could judge the peer."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("fhir_server.serving.uvicorn.run", lambda *args, **options: calls.append(options))
    serve("127.0.0.1", 1, 1, proxy_headers=True)
    assert calls[0]["proxy_headers"] is False

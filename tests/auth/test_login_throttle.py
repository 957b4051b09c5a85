"""Sign-in throttling (docs/security.md: over a rate limit → 429 ``throttled`` with Retry-After): failed passwords are
limited per username and per client address, counted in the database so that the limits hold across processes;
a throttled attempt is refused without its password being checked; a success resets the user's count; the limit
lifts when the window has passed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete

from fhir_server.store.tables import oauth_login_failures
from tests.auth.smart_support import PASSWORD, Browser, register_user, smart_server, unique
from tests.support.process import server_process
from tests.support.server import RunningServer

LIMITS = {"login_max_failures_per_user": 3, "login_max_failures_per_address": 6}


@pytest.fixture(scope="module")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    with smart_server(database_url, backend, **LIMITS) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_counts(server: RunningServer) -> Iterator[None]:
    """Every test server sits on 127.0.0.1: these tests' failures must not throttle other tests (or each other)."""
    _forget_all(server)
    yield
    _forget_all(server)


def _forget_all(server: RunningServer) -> None:
    with server.app.state.engine.begin() as conn:
        conn.execute(delete(oauth_login_failures))


def attempt(server: Any, username: str, password: str) -> Any:
    browser = Browser(server)
    try:
        return browser.sign_in(username, password)
    finally:
        browser.close()


def assert_throttled(response: Any, max_wait: int = 900) -> int:
    assert response.status_code == 429, response.text[:300]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= max_wait
    assert "Too many failed sign-in attempts. Try again in" in response.text
    assert re.search(r'name="csrf_token"', response.text)  # still the sign-in page, ready for later
    return retry_after


def test_a_users_failed_passwords_are_limited_and_then_even_the_right_one_is_refused(server):
    username = register_user(server)
    for _ in range(3):
        assert attempt(server, username, "wrong password").status_code == 401
    retry_after = assert_throttled(attempt(server, username, "wrong password"))
    assert retry_after > 890  # the oldest failure leaves the 15-minute window only then
    assert_throttled(attempt(server, username, PASSWORD))  # not checked: a right guess looks like a wrong one
    other = register_user(server)  # another user from the same address is not affected (6 allowed per address)
    assert attempt(server, other, PASSWORD).status_code == 200


def test_unknown_usernames_are_throttled_alike(server):
    """Otherwise the throttle would tell which usernames exist."""
    nobody = unique("nobody")
    for _ in range(3):
        assert attempt(server, nobody, "guess").status_code == 401
    assert_throttled(attempt(server, nobody, "guess"))


def test_a_success_resets_the_users_count(server):
    username = register_user(server)
    for _ in range(2):
        assert attempt(server, username, "wrong password").status_code == 401
    assert attempt(server, username, PASSWORD).status_code == 200
    for _ in range(3):
        assert attempt(server, username, "wrong password").status_code == 401
    assert_throttled(attempt(server, username, "wrong password"))


def test_the_address_limit_covers_many_usernames(server):
    for _ in range(6):
        assert attempt(server, unique("sprayed"), "Winter2026!").status_code == 401
    assert_throttled(attempt(server, unique("sprayed"), "Winter2026!"))
    # A success elsewhere does not reset the address count (a guesser with one real account cannot lift it).
    assert_throttled(attempt(server, register_user(server), PASSWORD))


def test_the_limit_lifts_when_the_window_has_passed(database_url, backend):
    # 5 s: long enough that the three attempts surely fall in one window even on a busy machine.
    with smart_server(database_url, backend, login_max_failures_per_user=2, login_failure_window_seconds=5) as quick:
        try:
            username = register_user(quick)
            for _ in range(2):
                assert attempt(quick, username, "wrong password").status_code == 401
            retry_after = assert_throttled(attempt(quick, username, PASSWORD), max_wait=5)
            time.sleep(retry_after + 0.2)
            assert attempt(quick, username, PASSWORD).status_code == 200
        finally:
            _forget_all(quick)


@contextmanager
def _process(database_url: str) -> Iterator[Any]:
    env = {
        "FHIR_SERVER_AUTH_REQUIRED": "true",
        "FHIR_SERVER_LOAD_LIBRARY": "false",
        "FHIR_SERVER_LOGIN_MAX_FAILURES_PER_USER": "3",
    }
    with server_process(database_url, **env) as process:
        yield process


def test_the_counts_hold_across_processes(server, database_url):
    username = register_user(server)
    with _process(database_url) as other_process:
        assert attempt(server, username, "wrong password").status_code == 401
        assert attempt(other_process, username, "wrong password").status_code == 401
        assert attempt(server, username, "wrong password").status_code == 401
        assert_throttled(attempt(other_process, username, PASSWORD))
        assert_throttled(attempt(server, username, PASSWORD))

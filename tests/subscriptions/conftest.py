"""The subscription tests' server (one per module and database; test_wake.py starts its own) and receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.subscriptions.receiver import Receiver
from tests.subscriptions.support import subscription_server
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def server(backend: str) -> Iterator[RunningServer]:
    with subscription_server(backend) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()

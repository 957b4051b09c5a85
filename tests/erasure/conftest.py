"""The erasure tests' server (erasure switched on, a Backend Services client allowed to erase) and its client, one
per test module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.erasure.support import eraser, erasure_server
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def server(backend: str) -> Iterator[RunningServer]:
    with erasure_server(backend, load_library=False) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with eraser(server) as c:
        yield c

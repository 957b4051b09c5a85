"""Module-scoped fixtures for the search tests: data that many parametrised cases only read is created once per
module and backend (the ``client`` and ``uid`` fixtures of tests/conftest.py are per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture(scope="module")
def shared_client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.fhir_base, timeout=30, headers={"Accept": "application/fhir+json"}) as c:
        yield c


@pytest.fixture(scope="module")
def shared_uid() -> str:
    return uuid.uuid4().hex[:16]

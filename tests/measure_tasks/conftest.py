"""Servers for these tests know the address clients reach them at: a Task with a delivery input makes the outreach
hook write a one-time link in the Task's transaction, and it refuses the Task without that address; and they ask
no identity check before a link opens (these tests are about the Task, not the link: fhir_server/outreach has
its own), so a request needs no Patient with a birthDate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from tests.support.server import RunningServer, ServerThread

LINK_BASE = "https://fit.example"
LINKS = {"link_base_url": LINK_BASE, "link_identity_check": "none"}


@pytest.fixture(scope="session")
def server(database_url: str, backend: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_url, _env_file=None, **LINKS)
    with ServerThread(settings, backend) as running:
        yield running

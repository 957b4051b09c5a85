"""Subscription tests: a server (authorization on, notification worker on, fast retries) on a new database, real
receivers, and Subscriptions as a client writes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fhir_server.auth.admin import add_client
from fhir_server.config import Settings
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

TOPIC = "http://fit-fhir.org/fhir/SubscriptionTopic"
FLAGS, SCORES, RESPONSES = f"{TOPIC}/flag-raised-or-closed", f"{TOPIC}/score-written", f"{TOPIC}/response-completed"
EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
LOW, HIGH = (20, 25, 30, 20), (90, 92, 95, 94)  # an SRS under its cutoff (a Flag), and one well above


@contextmanager
def subscription_server(backend: str, **settings: Any) -> Iterator[RunningServer]:
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    values: dict[str, Any] = {
        "auth_required": True,
        "subscription_worker": True,
        "subscription_poll_seconds": 0.05,
        "subscription_base_delay_seconds": 0.05,
        "subscription_max_delay_seconds": 0.3,
        "subscription_max_attempts": 30,  # about 5 s of failures: longer than the receiver-down test's outage
        **settings,
    }
    with database as url, ServerThread(Settings(database_url=url, _env_file=None, **values), backend) as running:
        register_clients(running, *CLIENTS)
        yield running


CLIENTS = ("admin", "app", "obs-only")  # the clients the tests' tokens name (a subscription needs its creator's)


def register_clients(server: RunningServer, *client_ids: str) -> None:
    for client_id in client_ids:
        add_client(server.app.state.engine, name=client_id, kind="public", redirect_uris=["https://app.example/cb"],
                   client_id=client_id)  # fmt: skip


def admin(server: RunningServer) -> httpx.Client:
    return client_for(server, mint(server, "system/*.cruds", client_id="admin", sub="admin"))


def subscription(
    topic: str,
    endpoint: str,
    *,
    filters: tuple[str, ...] = (),
    content: str | None = "full-resource",
    heartbeat: int | None = None,
    max_count: int | None = None,
) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "header": ["X-Test: yes"]}
    if content is not None:
        channel["payload"] = "application/fhir+json"
        channel["_payload"] = {"extension": [{"url": f"{EXT}/backport-payload-content", "valueCode": content}]}
    extensions = []
    if heartbeat is not None:
        extensions.append({"url": f"{EXT}/backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if max_count is not None:
        extensions.append({"url": f"{EXT}/backport-max-count", "valuePositiveInt": max_count})
    if extensions:
        channel["extension"] = extensions
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{EXT}/backport-subscription"]},
        "status": "requested",
        "reason": "test",
        "criteria": topic,
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": f"{EXT}/backport-filter-criteria", "valueString": f} for f in filters]
        }
    return resource


def create(c: httpx.Client, resource: dict[str, Any]) -> str:
    response = c.post("/Subscription", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_status(c: httpx.Client, subscription_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resource = c.get(f"/Subscription/{subscription_id}").json()
        if resource.get("status") == status:
            return resource
        assert time.monotonic() < deadline, f"still {resource.get('status')}: {resource.get('error')}"
        time.sleep(0.05)


def patient(c: httpx.Client) -> str:
    response = c.post("/Patient", json={"resourceType": "Patient", "birthDate": "1990-04-02"})
    assert response.status_code == 201, response.text
    return response.json()["id"]

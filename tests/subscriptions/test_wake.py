"""A committed write wakes the notification worker: with a poll interval of an hour, the handshake of a new
Subscription and the notification of a response both arrive (they could only come from the wake-up), on both
databases, so a change reaches its subscriber when it commits rather than at the worker's next poll."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from tests.subscriptions.receiver import Receiver, event_numbers, status_of
from tests.subscriptions.support import (
    HIGH,
    RESPONSES,
    admin,
    create,
    patient,
    register_clients,
    subscription,
    subscription_server,
    wait_status,
)
from tests.support.access_data import srs
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread


@pytest.fixture(scope="module")
def server(backend: str) -> Iterator[RunningServer]:
    with subscription_server(backend, subscription_poll_seconds=3600) as running:
        yield running


def test_a_commit_wakes_the_worker_instead_of_its_next_poll(server, receiver):
    with admin(server) as c:
        sid = create(c, subscription(RESPONSES, receiver.url))
        wait_status(c, sid, "active")  # the handshake: the Subscription's own write woke the worker
        for _ in range(3):
            answers = srs(patient(c), HIGH, "2026-11-20T16:45:00Z", uuid.uuid4().hex)
            notified = len(receiver.bundles("event-notification"))
            assert c.post("/QuestionnaireResponse", json=answers).status_code == 201
            receiver.wait_for(lambda n=notified: len(receiver.bundles("event-notification")) > n)
        bundles = receiver.bundles("event-notification")
        assert event_numbers(bundles) == [1, 2, 3]
        assert all(status_of(b)["subscription"]["reference"].endswith(sid) for b in bundles)


def test_once_active_it_hears_of_changes_committed_in_another_process(backend: str):
    """Two server processes on one database (here two apps, each its own engine and caches): A runs the
    notification worker, B only takes writes.  B has just looked up which types have subscriptions (none) when the
    Subscription is created at A; the handshake waits until B's answer has expired, so the submission B takes
    the moment the Subscription is active is notified."""
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url:
        values = {"database_url": url, "_env_file": None, "auth_required": True, "subscription_local_endpoints": True}
        a = ServerThread(Settings(**values, subscription_worker=True, subscription_poll_seconds=0.05), backend)
        b = ServerThread(Settings(**values, subscription_worker=False), backend)
        receiver = Receiver()
        receiver.up()
        try:
            with a as at_a, b as at_b, admin(at_a) as ca, admin(at_b) as cb:
                register_clients(at_a, "admin")
                submit = srs(patient(cb), HIGH, "2026-11-20T16:45:00Z", uuid.uuid4().hex)
                assert cb.post("/QuestionnaireResponse", json=submit).status_code == 201  # B: no subscriber yet
                sid = create(ca, subscription(RESPONSES, receiver.url))
                wait_status(ca, sid, "active", timeout=20)
                answers = srs(patient(cb), HIGH, "2026-11-20T16:45:00Z", uuid.uuid4().hex)
                response = cb.post("/QuestionnaireResponse", json=answers)
                assert response.status_code == 201
                receiver.wait_for(lambda: receiver.bundles("event-notification"))
                [bundle] = receiver.bundles("event-notification")
                [event] = status_of(bundle)["notification-event"]
                assert event_numbers([bundle]) == [1]
                assert event["focus"]["reference"].endswith(f"QuestionnaireResponse/{response.json()['id']}")
        finally:
            receiver.down()

"""What a subscriber may receive: only resources the Subscription's creator could read with the token it was
created under (its scopes and launch patient, kept with the Subscription), whatever the payload asks: nothing
about another patient's records is sent, in full or by id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from tests.api.fhir import assert_outcome
from tests.subscriptions.receiver import Receiver, event_numbers, status_of
from tests.subscriptions.support import (
    FLAGS,
    LOW,
    RESPONSES,
    admin,
    create,
    patient,
    register_clients,
    subscription,
    wait_status,
)
from tests.support.access_data import srs
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import ServerThread
from tests.support.tokens import client_for, mint


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver, Receiver]]:
    found = (Receiver(), Receiver(), Receiver())
    for r in found:
        r.up()
    yield found
    for r in found:
        r.down()


def test_a_subscriber_never_receives_what_its_creator_could_not_read(server, receivers):
    everything, patient_scoped, no_flags = receivers
    with admin(server) as c:
        mine, other = patient(c), patient(c)
        full = create(c, subscription(FLAGS, everything.url))
        token = mint(server, "patient/*.rs patient/Subscription.cruds", patient=mine, client_id="app", sub="p")
        with client_for(server, token) as p:
            scoped = create(p, subscription(FLAGS, patient_scoped.url))
            scoped_ids = create(p, subscription(RESPONSES, patient_scoped.url, content="id-only"))
        token = mint(server, "system/Subscription.cruds system/Observation.rs", client_id="obs-only", sub="o")
        with client_for(server, token) as o:
            blind = create(o, subscription(FLAGS, no_flags.url))
        for sid in (full, scoped, scoped_ids, blind):
            wait_status(c, sid, "active")

        for subject in (other, mine):
            response = srs(subject, LOW, "2026-11-20T16:45:00Z", uuid.uuid4().hex)
            assert c.post("/QuestionnaireResponse", json=response).status_code == 201

        def of(r: Receiver, sid: str) -> list[dict]:
            return [
                b for b in r.bundles("event-notification") if status_of(b)["subscription"]["reference"].endswith(sid)
            ]

        def subjects(bundles: list[dict]) -> set[str]:
            return {e["resource"]["subject"]["reference"] for b in bundles for e in b["entry"][1:] if "resource" in e}

        everything.wait_for(lambda: subjects(of(everything, full)) == {f"Patient/{mine}", f"Patient/{other}"})
        patient_scoped.wait_for(lambda: of(patient_scoped, scoped) and of(patient_scoped, scoped_ids))
        # Events are queued in the transaction that wrote them: by now nothing more about these writes can come.
        # The other patient's Flags and responses never reach the patient-scoped subscriber, not even by id.
        sent = [e for b in patient_scoped.bundles("event-notification") for e in b["entry"][1:]]
        assert sent and all(other not in str(e) for e in sent)
        assert subjects(of(patient_scoped, scoped)) == {f"Patient/{mine}"}
        numbers = event_numbers(of(patient_scoped, scoped))
        assert numbers == list(range(1, len(numbers) + 1))  # numbered among what it may receive: no gaps
        # a creator without read access to Flag hears of none at all
        assert not no_flags.bundles("event-notification")
        assert c.get(f"/Subscription/{blind}/$status").json()["entry"][0]["resource"]["parameter"][4] == {
            "name": "events-since-subscription-start",
            "valueString": "0",
        }


def test_the_operators_endpoint_list_is_kept_when_written_and_when_sending(backend: str, receivers):
    """FHIR_SERVER_SUBSCRIPTION_ENDPOINTS: an endpoint outside the list is refused on write; a Subscription whose
    endpoint the list no longer holds (the server restarted with another list) goes to error, sending nothing."""
    allowed, elsewhere, _ = receivers
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url:

        def started(endpoints: list[str]) -> ServerThread:
            settings = Settings(database_url=url, _env_file=None, auth_required=True, subscription_worker=True,
                                subscription_poll_seconds=0.05, subscription_local_endpoints=True,
                                subscription_endpoints=endpoints)  # fmt: skip
            return ServerThread(settings, backend)

        with started([allowed.url.rstrip("/")]) as first, admin(first) as c:
            register_clients(first, "admin")
            refused = c.post("/Subscription", json=subscription(RESPONSES, elsewhere.url))
            assert "not among the endpoints" in assert_outcome(refused, 422, "value")["issue"][0]["diagnostics"]
            sid = create(c, subscription(RESPONSES, allowed.url))
            wait_status(c, sid, "active")
        with started([elsewhere.url]) as second, admin(second) as c:
            answers = srs(patient(c), LOW, "2026-11-20T16:45:00Z", uuid.uuid4().hex)
            assert c.post("/QuestionnaireResponse", json=answers).status_code == 201
            stopped = wait_status(c, sid, "error")
            assert "no longer among those the server's operator allows" in stopped["error"]
        assert allowed.bundles("event-notification") == [] and elsewhere.bundles("event-notification") == []

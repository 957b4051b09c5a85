"""Topic-based subscriptions end to end, on both databases: a server with the notification worker on, real
receivers (tests/subscriptions/receiver.py), responses submitted and scored as a client would.

Validation on create, the handshake and ``active``, a failed handshake and ``error``, each topic with its filter
and payload kinds, heartbeats, a receiver down for a while (every event arrives, in order), a receiver answering
500 forever (``error``, shown by ``$status``, resumed by ``fhir-server subscriptions retry``), ``$events``."""

from __future__ import annotations

import uuid

import pytest

from fhir_server.auth.admin import remove_client
from fhir_server.store import subscription_store
from tests.api.fhir import assert_outcome
from tests.subscriptions.receiver import Receiver, event_numbers, notification_type, status_of
from tests.subscriptions.support import (
    FLAGS,
    HIGH,
    LOW,
    RESPONSES,
    SCORES,
    admin,
    create,
    patient,
    register_clients,
    subscription,
    wait_status,
)
from tests.support.access_data import srs
from tests.support.process import cli
from tests.support.tokens import client_for, mint


def submit(c, patient_id: str, marks: tuple[int, int, int, int]) -> str:
    response = c.post("/QuestionnaireResponse", json=srs(patient_id, marks, "2026-11-20T16:45:00Z", uuid.uuid4().hex))
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"criteria": "http://example.org/SubscriptionTopic/nope"}, "subscription topics"),
        ({"_criteria": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                       "backport-filter-criteria", "valueString": "Flag?author=x"}]}}, "filters Flag"),
        ({"_criteria": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                       "backport-filter-criteria", "valueString": "Observation?patient=x"}]}},
         "Flag?parameter=value"),
        ({"channel": {"type": "rest-hook", "endpoint": "http://example.org/hook"}}, "https"),
        ({"channel": {"type": "email", "endpoint": "mailto:a@example.org"}}, "rest-hook"),
        ({"status": "active"}, "requested"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_clearly(server, change, expected):
    with admin(server) as c:
        resource = {**subscription(FLAGS, "https://receiver.example.org/hook"), **change}
        outcome = assert_outcome(c.post("/Subscription", json=resource), 422, "value")
        assert expected in outcome["issue"][0]["diagnostics"]
        payload = subscription(FLAGS, "https://receiver.example.org/hook", content="everything")
        refused = assert_outcome(c.post("/Subscription", json=payload), 422, "value")
        assert "payload content" in refused["issue"][0]["diagnostics"]


def test_handshake_makes_it_active_and_a_failed_one_an_error(server, receiver):
    with admin(server) as c:
        sid = create(c, subscription(RESPONSES, receiver.url))
        wait_status(c, sid, "active")
        handshake = receiver.bundles("handshake")
        assert len(handshake) == 1 and handshake[0]["type"] == "history"
        assert status_of(handshake[0])["subscription"]["reference"].endswith(f"Subscription/{sid}")
        assert receiver.headers[0]["X-Test"] == "yes"

        closed = Receiver()  # nothing listens on its port
        bad = create(c, subscription(RESPONSES, closed.url))
        errored = wait_status(c, bad, "error")
        assert "handshake failed" in errored["error"]
        status = c.get(f"/Subscription/{bad}/$status").json()
        assert status["type"] == "searchset" and status_of(status)["status"] == "error"


def test_each_topic_with_its_filter_and_payload(server, receiver):
    with admin(server) as c:
        mine, other = patient(c), patient(c)
        flags = create(c, subscription(FLAGS, receiver.url, filters=(f"Flag?patient=Patient/{mine}",)))
        scores = create(
            c, subscription(SCORES, receiver.url, content="id-only", filters=(f"Observation?patient={mine}",))
        )
        # full-resource of a score: its decimals as stored (a notification of one once failed to serialise)
        scores_full = create(c, subscription(SCORES, receiver.url, filters=(f"Observation?patient={mine}",)))
        responses = create(c, subscription(RESPONSES, receiver.url, content="empty"))
        for sid in (flags, scores, scores_full, responses):
            wait_status(c, sid, "active")
        submit(c, other, LOW)  # another client: only the unfiltered response topic hears of it
        response_id = submit(c, mine, LOW)

        def of(sid: str) -> list[dict]:
            return [b for b in receiver.bundles("event-notification")
                    if status_of(b)["subscription"]["reference"].endswith(sid)]  # fmt: skip

        receiver.wait_for(
            lambda: of(flags) and of(scores) and of(scores_full) and len(event_numbers(of(responses))) == 2
        )
        full = [e["resource"] for b in of(scores_full) for e in b["entry"][1:]]
        assert full and all(r["resourceType"] == "Observation" and "valueQuantity" in r for r in full), full
        flag_entries = [e for b in of(flags) for e in b["entry"][1:]]
        assert flag_entries and all(e["resource"]["resourceType"] == "Flag" for e in flag_entries)
        assert all(e["resource"]["subject"]["reference"] == f"Patient/{mine}" for e in flag_entries)
        score_entries = [e for b in of(scores) for e in b["entry"][1:]]
        assert score_entries and all(
            "resource" not in e and "/Observation/" in "/" + e["fullUrl"] for e in score_entries
        )
        for b in of(responses):  # empty: the status alone, no focus
            assert len(b["entry"]) == 1
            assert all("focus" not in e for e in status_of(b)["notification-event"])
        assert event_numbers(of(responses)) == [1, 2]

        events = c.get(f"/Subscription/{flags}/$events", params={"eventsSinceNumber": "1"}).json()
        assert events["type"] == "history" and notification_type(events) == "query-event"
        assert any(e.get("resource", {}).get("resourceType") == "Flag" for e in events["entry"][1:])
        assert response_id


def test_heartbeat_on_an_idle_subscription(server, receiver):
    with admin(server) as c:
        sid = create(c, subscription(RESPONSES, receiver.url, heartbeat=1))
        wait_status(c, sid, "active")
        receiver.wait_for(lambda: len(receiver.bundles("heartbeat")) >= 2, timeout=10)
        assert status_of(receiver.bundles("heartbeat")[0])["status"] == "active"


def test_a_receiver_down_for_a_while_gets_everything_in_order(server, receiver):
    with admin(server) as c:
        client = patient(c)
        sid = create(c, subscription(RESPONSES, receiver.url, content="id-only", max_count=2))
        wait_status(c, sid, "active")
        receiver.down()
        submitted = [submit(c, client, HIGH) for _ in range(5)]
        receiver.up()
        receiver.wait_for(lambda: len(event_numbers(receiver.bundles("event-notification"))) >= 5, timeout=30)
        notified = receiver.bundles("event-notification")
        assert event_numbers(notified) == [1, 2, 3, 4, 5]  # none lost, none twice here, in order
        focus = [e["fullUrl"].rsplit("/", 1)[1] for b in notified for e in b["entry"][1:]]
        assert focus == submitted
        assert c.get(f"/Subscription/{sid}").json()["status"] == "active"


def test_a_receiver_failing_forever_puts_it_in_error_until_retried(server, receiver):
    with admin(server) as c:
        client = patient(c)
        sid = create(c, subscription(RESPONSES, receiver.url, content="id-only"))
        wait_status(c, sid, "active")
        receiver.failing, receiver.retry_after = True, "0"
        submit(c, client, HIGH)
        errored = wait_status(c, sid, "error")
        assert "answered 500" in errored["error"]
        status = status_of(c.get(f"/Subscription/{sid}/$status").json())
        assert status["status"] == "error" and "answered 500" in status["error"]["text"]
        submit(c, client, HIGH)  # kept while in error

        receiver.failing = False
        listed = cli(server.settings.database_url, "subscriptions", "list", "--status", "error")
        assert listed.returncode == 0 and sid in listed.stdout, listed.stderr
        resumed = cli(server.settings.database_url, "subscriptions", "retry", sid)
        assert resumed.returncode == 0, resumed.stderr
        wait_status(c, sid, "active")
        receiver.wait_for(lambda: event_numbers(receiver.bundles("event-notification")) == [1, 2])


def test_retry_after_is_honoured(server, receiver):
    with admin(server) as c:
        client = patient(c)
        sid = create(c, subscription(RESPONSES, receiver.url, content="id-only"))
        wait_status(c, sid, "active")
        receiver.fail_next, receiver.retry_after = 1, "2"
        before = len(receiver.attempts)
        submit(c, client, HIGH)
        receiver.wait_for(lambda: event_numbers(receiver.bundles("event-notification")) == [1])
        refused, accepted = receiver.attempts[before], receiver.attempts[-1]
        assert accepted - refused >= 1.9  # the backoff alone would have retried within 0.3 s


def test_switched_off_or_deleted_it_sends_nothing_more(server, receiver):
    with admin(server) as c:
        client = patient(c)
        off = create(c, subscription(RESPONSES, receiver.url, content="id-only"))
        gone = create(c, subscription(RESPONSES, receiver.url, content="id-only"))
        for sid in (off, gone):
            wait_status(c, sid, "active")
        current = c.get(f"/Subscription/{off}").json()
        assert c.put(f"/Subscription/{off}", json={**current, "status": "off"}).status_code == 200
        assert c.delete(f"/Subscription/{gone}").status_code == 200
        submit(c, client, HIGH)
        witness = create(
            c, subscription(RESPONSES, receiver.url, content="id-only")
        )  # created after: hears of later ones
        wait_status(c, witness, "active")
        submit(c, client, HIGH)
        receiver.wait_for(lambda: any(status_of(b)["subscription"]["reference"].endswith(witness)
                                      for b in receiver.bundles("event-notification")))  # fmt: skip
        assert not [b for b in receiver.bundles("event-notification")
                    if not status_of(b)["subscription"]["reference"].endswith(witness)]  # fmt: skip
        assert c.get(f"/Subscription/{off}").json()["status"] == "off"


def test_removing_its_creators_client_stops_it(server, receiver):
    register_clients(server, "leaver")
    with admin(server) as c, client_for(server, mint(server, "system/*.cruds", client_id="leaver", sub="leaver")) as lc:
        sid = create(lc, subscription(RESPONSES, receiver.url, content="id-only"))
        wait_status(c, sid, "active")
        submit(c, patient(c), HIGH)
        receiver.wait_for(lambda: receiver.bundles("event-notification"))
        remove_client(server.app.state.engine, "leaver")
        submit(c, patient(c), HIGH)
        stopped = wait_status(c, sid, "error")
        assert "client (leaver) is no longer registered" in stopped["error"]
        assert event_numbers(receiver.bundles("event-notification")) == [1]  # the second event was never sent
        resumed = cli(server.settings.database_url, "subscriptions", "retry", sid)
        assert resumed.returncode == 0 and resumed.stdout.startswith("1 subscription(s) resumed"), resumed.stderr
        engine = server.app.state.engine
        receiver.wait_for(lambda: subscription_store.get(engine, sid)["status"] == "error")  # and stopped again
        assert len(receiver.bundles("handshake")) == 1 and event_numbers(receiver.bundles("event-notification")) == [1]

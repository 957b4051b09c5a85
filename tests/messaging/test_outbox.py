"""The worker's rules, with real transports and peers: a renderer's None skips the row and sends nothing, a
renderer's failure is retried, a channel without a transport waits (said once, and in ``outbox list``), a row
too old is dead at its next failure, two workers never send a row twice, and no log holds a recipient or a
message's words."""

from __future__ import annotations

import json
import logging

import pytest

from fhir_server.messaging import MessageOutboxError, Outgoing, enqueue
from fhir_server.messaging import outbox as messages
from tests.messaging.conftest import received_by, wait_for
from tests.support.process import cli
from tests.support.server import free_port


def test_a_renderer_that_returns_none_skips_the_row_and_nothing_is_sent(outbox, mail, sms):
    before = (len(mail.messages()), len(sms.requests()))  # this xdist worker's peers; its tests run one by one
    outbox.worker()
    email_row = outbox.enqueue(None)
    sms_row = outbox.enqueue(None, channel="sms")
    for row_id in (email_row, sms_row):
        row = outbox.wait_status(row_id, "skipped")
        assert row.attempts == 0 and row.sent_at is None
    assert set(outbox.rendered) == {email_row, sms_row}  # asked, and it said there is nothing to send
    # The transports are called only after the renderer, in the same thread: nothing can still be on its way.
    assert (len(mail.messages()), len(sms.requests())) == before


def test_a_renderer_that_raises_is_retried(outbox, mail, uid):
    address = f"later-{uid}@clinic-clients.test"
    outbox.failures[5] = 2
    outbox.worker()
    row_id = outbox.enqueue(Outgoing(address, "Later", "Sent on the third try", None, "en"), subject_id=5)
    row = outbox.wait_status(row_id, "sent")
    assert row.attempts == 3 and len(received_by(mail, address)) == 1


def test_a_channel_without_a_transport_waits_and_says_so_once(outbox, db, caplog, uid):
    caplog.set_level(logging.INFO, logger="fhir_server.messaging")
    outbox.worker(sms_gateway_url="")  # no SMS transport (and not the sandbox)
    rows = [outbox.enqueue(Outgoing("+15550001111", "", "x", None, "en"), channel="sms") for _ in range(2)]
    for row_id in rows:
        row = wait_for(lambda row_id=row_id: (r := outbox.row(row_id)).last_error and r, "the row says why")
        assert row.status == "pending" and row.attempts == 0
        assert row.last_error == "no SMS transport is configured (FHIR_SERVER_SMS_GATEWAY_URL): waiting"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "messages wait" in r.getMessage()]
    assert len(warnings) == 1
    listed = cli(db, "outbox", "list", "--messages", "--status", "pending")
    assert listed.returncode == 0, listed.stderr
    for row_id in rows:
        line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{row_id} "))
        assert "pending" in line and "no SMS transport is configured" in line


def test_a_row_past_its_maximum_age_is_dead_at_its_next_failure(outbox, uid):
    outbox.worker(smtp_url=f"smtp://127.0.0.1:{free_port()}", message_max_age_seconds=0.001)  # nothing listens
    row_id = outbox.enqueue(Outgoing(f"old-{uid}@clinic-clients.test", "Old", "x", None, "en"))
    row = outbox.wait_status(row_id, "dead")
    assert row.attempts == 1 and row.last_error == "TransientSendError: SMTP: connection refused"


def test_two_workers_never_send_a_row_twice(outbox, sms, uid):
    numbers = [f"+1555{int(uid[:6], 16) % 1000:03d}{i:04d}" for i in range(30)]
    rows = [outbox.enqueue(Outgoing(n, "", f"message {n}", None, "en"), channel="sms") for n in numbers]
    # two workers, each with its own connection pool, as two server processes would have
    outbox.worker()
    outbox.worker(outbox.repository())
    for row_id in rows:
        outbox.wait_status(row_id, "sent")
    delivered = [json.loads(r["body"]).get("to") for r in sms.delivered()]  # other tests use other templates
    assert sorted(n for n in delivered if n in numbers) == sorted(numbers)  # each once, none twice
    assert all(r.attempts == 1 for r in messages.rows(outbox.repo.engine, "sent"))


def test_no_log_holds_a_recipient_or_the_words(outbox, mail, sms, caplog, uid):
    caplog.set_level(logging.DEBUG)
    address, refused, number = f"phi-{uid}@clinic-clients.test", f"phi-{uid}@refused.example", "+15557654321"
    words = f"Private words {uid}"
    outbox.worker()
    sent = outbox.enqueue(Outgoing(address, f"Subject {uid}", words, f"<p>{words}</p>", "en"))
    dead = outbox.enqueue(Outgoing(refused, f"Subject {uid}", words, None, "en"))
    sms.fail(1)
    texted = outbox.enqueue(Outgoing(number, "", words, None, "en"), channel="sms")
    for row_id, status in ((sent, "sent"), (dead, "dead"), (texted, "sent")):
        outbox.wait_status(row_id, status)
    logged = caplog.text + " ".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    for secret in (address, refused, number, words, uid, "mail-secret", "sms-token"):
        assert secret not in logged
    assert any(getattr(r, "message_row", None) == dead for r in caplog.records)  # the row is named instead


def test_enqueue_refuses_an_unknown_channel(outbox):
    with pytest.raises(MessageOutboxError, match="channel must be one of email, sms"):
        outbox.repo.write(lambda s: enqueue(s, outbox.kind, 1, "fax"))

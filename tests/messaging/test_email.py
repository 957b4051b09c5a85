"""Email through a real SMTP server process (aiosmtpd): STARTTLS and AUTH for real, an outage that ends, a
recipient refused for good, and the administrator's list and retry (``fhir-server outbox``) run as commands."""

from __future__ import annotations

from fhir_server.messaging import Outgoing
from tests.messaging.conftest import FROM, REFUSED, SMTP_USER, mail_server, received_by, wait_for
from tests.support.process import cli

SUBJECT = "Ihre Rückmeldung: bitte vor Donnerstag, Grüße"


def _message(to: str) -> Outgoing:
    return Outgoing(
        recipient=to,
        subject=SUBJECT,
        text="Guten Tag,\nbitte füllen Sie den Bogen aus: https://fit.example/app/l/abc123\n",
        html='<p>Guten Tag,</p><p><a href="https://fit.example/app/l/abc123">Bogen öffnen</a></p>',
        language="de",
    )


def test_an_email_goes_through_starttls_with_a_login_with_both_parts_and_its_language(outbox, mail, uid):
    address = f"client-{uid}@clinic-clients.test"
    outbox.worker()
    row_id = outbox.enqueue(_message(address))
    [message] = wait_for(lambda: received_by(mail, address), "the email arrives")
    row = outbox.wait_status(row_id, "sent")
    assert row.attempts == 1 and row.sent_at is not None and row.last_error is None

    assert message["From"] == FROM and message["To"] == address
    assert message["Subject"] == SUBJECT  # UTF-8, encoded in the header and decoded back
    assert message["Content-Language"] == "de"
    assert message["Message-ID"].endswith("@clinic.test>")
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain.get_content().replace("\r\n", "\n") == _message(address).text  # CRLF on the wire
    assert html.get_content().strip() == _message(address).html
    [envelope] = [e for e in mail.envelopes() if e["rcpt_tos"] == [address]]
    assert envelope["tls"] is True and envelope["login"] == SMTP_USER  # STARTTLS first, then AUTH
    assert envelope["mail_from"] == "no-reply@clinic.test"


def test_a_text_only_message_has_no_html_part(outbox, mail, uid):
    address = f"plain-{uid}@clinic-clients.test"
    outbox.worker()
    outbox.enqueue(Outgoing(address, "Reminder", "Only text.", None, "en"))
    [message] = wait_for(lambda: received_by(mail, address), "the email arrives")
    assert message.get_content_type() == "text/plain" and message.get_content().strip() == "Only text."
    assert message["Content-Language"] == "en"


def test_mail_server_down_then_up_the_message_is_delivered_exactly_once(outbox, peers_folder, certificate, uid):
    server = mail_server(peers_folder, certificate)  # its own, so stopping it disturbs no other test
    server.start()
    server.stop()
    try:
        address = f"outage-{uid}@clinic-clients.test"
        outbox.worker(smtp_url=f"smtp://127.0.0.1:{server.port}")
        row_id = outbox.enqueue(_message(address))
        failing = wait_for(lambda: (r := outbox.row(row_id)).attempts >= 3 and r, "three failed attempts")
        assert failing.status == "pending"
        assert failing.last_error == "TransientSendError: SMTP: connection refused"
        server.start()
        row = outbox.wait_status(row_id, "sent")
        [message] = received_by(server, address)
        assert message["Subject"] == SUBJECT and row.attempts >= 4
        assert len(server.messages()) == 1  # nothing else, nothing twice
    finally:
        server.stop()


def test_a_refused_recipient_is_dead_listed_and_sent_after_retry(outbox, mail, db, uid):
    refused = f"nobody-{uid}@{REFUSED}"
    outbox.worker()
    row_id = outbox.enqueue(_message(refused), subject_id=7)
    row = outbox.wait_status(row_id, "dead")
    assert row.attempts == 1  # at once: retrying would not help
    assert row.last_error == "PermanentSendError: SMTP 550: the recipient was refused"  # no address

    listed = cli(db, "outbox", "list", "--messages")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{row_id} "))
    assert outbox.kind in line and "email" in line and "dead" in line and "SMTP 550" in line
    assert refused not in listed.stdout and "nobody" not in listed.stdout  # the recipient is never shown
    both = cli(db, "outbox", "list", "--dead")  # both sections, EHR deliveries first
    assert both.returncode == 0 and "deliveries to EHRs:" in both.stdout and f"\n{row_id} " in both.stdout

    missing = cli(db, "outbox", "retry", "--message", "999999999")
    assert missing.returncode == 1 and "no message outbox row 999999999" in missing.stderr

    corrected = f"corrected-{uid}@clinic-clients.test"
    outbox.outgoing[7] = _message(corrected)  # the address was corrected meanwhile; the row words it anew
    retried = cli(db, "outbox", "retry", "--message", str(row_id))
    assert retried.returncode == 0 and f"message {row_id} queued again" in retried.stdout, retried.stderr
    wait_for(lambda: received_by(mail, corrected), "the retried email arrives")
    assert outbox.wait_status(row_id, "sent").attempts == 1  # a fresh budget, one attempt used
    again = cli(db, "outbox", "retry", "--message", str(row_id))
    assert again.returncode == 1 and f"message outbox row {row_id} is sent, not dead" in again.stderr
    assert received_by(mail, refused) == []


def test_retry_all_messages_brings_every_dead_one_back(outbox, mail, db, uid):
    outbox.worker()
    rows = [outbox.enqueue(_message(f"n{i}-{uid}@{REFUSED}"), subject_id=i) for i in (1, 2)]
    for row_id in rows:
        outbox.wait_status(row_id, "dead")
    for i in (1, 2):
        outbox.outgoing[i] = _message(f"ok{i}-{uid}@clinic-clients.test")
    retried = cli(db, "outbox", "retry", "--all-messages")
    assert retried.returncode == 0 and "2 dead messages queued again" in retried.stdout, retried.stderr
    for i in (1, 2):
        wait_for(lambda i=i: received_by(mail, f"ok{i}-{uid}@clinic-clients.test"), f"message {i} arrives")


def test_a_refused_login_is_retried_not_dead(outbox, mail, uid):
    outbox.worker(smtp_password="not-the-password")
    row_id = outbox.enqueue(_message(f"login-{uid}@clinic-clients.test"))
    row = wait_for(lambda: (r := outbox.row(row_id)).attempts >= 2 and r, "two failed attempts")
    assert row.status == "pending" and row.last_error == "TransientSendError: SMTP 535: the login was refused"
    assert "not-the-password" not in row.last_error

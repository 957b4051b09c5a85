"""SMS through the generic HTTP gateway, against a stand-in gateway process: the body template filled with
JSON-escaped values, the credentials, a gateway that answers 503 for a while, a refusal."""

from __future__ import annotations

import base64
import json

from fhir_server.messaging import Outgoing
from tests.messaging.conftest import SMS_TOKEN, sms_to, wait_for

# quotes, a newline, a backslash, non-ASCII and a placeholder inside the text itself: none may change the body
TEXT = 'Bitte "jetzt" ausfüllen:\nhttps://fit.example/app/l/x1 \\ {to} {text}'
TEMPLATE = '{"recipient": {"number": "{to}"}, "message": "{text}", "channel": "sms"}'


def test_an_sms_is_posted_with_the_template_body_and_the_bearer_token(outbox, sms, uid):
    number = f"+4915{int(uid[:8], 16) % 10**9:09d}"
    outbox.worker(sms_body_template=TEMPLATE)
    row_id = outbox.enqueue(Outgoing(number, "", TEXT, None, "de"), channel="sms")
    [request] = wait_for(lambda: sms_to(sms, number), "the SMS reaches the gateway")
    assert json.loads(request["body"]) == {"recipient": {"number": number}, "message": TEXT, "channel": "sms"}
    assert request["authorization"] == f"Bearer {SMS_TOKEN}"
    assert request["content_type"] == "application/json"
    row = outbox.wait_status(row_id, "sent")
    assert row.attempts == 1 and row.channel == "sms"


def test_the_default_template_and_basic_credentials(outbox, sms, uid):
    number = f"+3161{int(uid[:8], 16) % 10**8:08d}"
    outbox.worker(sms_gateway_token="", sms_gateway_username="fit", sms_gateway_password="gw-pass")
    outbox.enqueue(Outgoing(number, "", "Hello", None, "en"), channel="sms")
    [request] = wait_for(lambda: sms_to(sms, number), "the SMS reaches the gateway")
    assert json.loads(request["body"]) == {"to": number, "text": "Hello"}
    assert request["authorization"] == "Basic " + base64.b64encode(b"fit:gw-pass").decode()


def test_a_gateway_answering_503_for_a_while_gets_the_sms_exactly_once(outbox, sms, uid):
    number = f"+4420{int(uid[:8], 16) % 10**8:08d}"
    sms.fail(3)  # the next three requests: this test's, as each test runs alone on its xdist worker's gateway
    outbox.worker()
    row_id = outbox.enqueue(Outgoing(number, "", "After the outage", None, "en"), channel="sms")
    row = outbox.wait_status(row_id, "sent")
    seen = sms_to(sms, number, status=None)
    assert [r["status"] for r in seen] == [503, 503, 503, 200]  # retried, and delivered once
    assert row.attempts == 4


def test_a_gateway_refusal_is_dead_at_once(outbox, sms, uid):
    outbox.worker(sms_gateway_url=sms.url.replace("/send", "/no-such-path"))  # the gateway answers 404
    row_id = outbox.enqueue(Outgoing("+15550000000", "", "x", None, "en"), channel="sms")
    row = outbox.wait_status(row_id, "dead")
    assert row.attempts == 1 and row.last_error == "PermanentSendError: SMS gateway: HTTP 404"

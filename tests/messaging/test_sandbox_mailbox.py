"""The sandbox mailbox: with the sandbox on and no SMTP server or gateway configured, messages are captured as
files, and /sandbox/mailbox shows them (newest first), escaped, with links clickable only to this server."""

from __future__ import annotations

import httpx

from fhir_server.config import Settings
from fhir_server.messaging import Outgoing
from tests.messaging.conftest import wait_for
from tests.support.server import ServerThread

ORIGIN = "https://sandbox.fit.test"


def test_captured_messages_are_listed_and_shown_safely(outbox, db, backend, tmp_path, uid):
    folder = tmp_path / "mailbox"
    capture = {"smtp_url": "", "sms_gateway_url": "", "sandbox": True, "sandbox_mailbox": str(folder)}
    outbox.worker(**capture)
    own, foreign = f"{ORIGIN}/app/l/{uid}", "https://elsewhere.example/phish"
    text = f"Hello <script>alert(1)</script>\nYour form: {own}\nNot ours: {foreign}\n"
    email_row = outbox.enqueue(Outgoing(f"c-{uid}@clinic-clients.test", "Your form", text, "<b>x</b>", "en"))
    outbox.wait_status(email_row, "sent")
    sms_row = outbox.enqueue(Outgoing("+15551112222", "", f"SMS {own}", None, "en"), channel="sms")
    outbox.wait_status(sms_row, "sent")
    files = sorted(p.suffix for p in folder.iterdir())
    assert files == [".eml", ".json"]

    settings = Settings(database_url=db, public_url=ORIGIN, load_library=False, message_worker=False, _env_file=None,
                        **{k: v for k, v in capture.items() if k.startswith("sandbox")})  # fmt: skip
    with ServerThread(settings, backend) as server, httpx.Client(base_url=server.root, timeout=30) as client:
        listing = client.get("/sandbox/mailbox")
        assert listing.status_code == 200 and listing.headers["Cache-Control"] == "no-store"
        page = listing.text
        assert page.index("+15551112222") < page.index(f"c-{uid}@clinic-clients.test")  # newest first
        name = next(p.name for p in folder.iterdir() if p.suffix == ".eml")
        shown = client.get(f"/sandbox/mailbox/{name}")
        assert shown.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text and "<script>" not in shown.text
        assert f'<a href="{own}">' in shown.text  # this server's own link
        assert foreign in shown.text and f'href="{foreign}"' not in shown.text  # shown, not clickable
        assert "<b>x</b>" not in shown.text  # the HTML part is never rendered
        for bad in ("..%2F..%2Fetc%2Fpasswd", "x.eml", name.replace(".eml", ".json")):
            assert client.get(f"/sandbox/mailbox/{bad}").status_code == 404


def test_no_mailbox_page_without_the_sandbox(db, backend):
    settings = Settings(database_url=db, load_library=False, message_worker=False, _env_file=None)
    with ServerThread(settings, backend) as server:
        assert httpx.get(f"{server.root}/sandbox/mailbox", timeout=30).status_code == 404


def test_wait_for_names_what_never_happened():
    try:
        wait_for(lambda: False, "the impossible", timeout=0.1)
    except AssertionError as exc:
        assert "the impossible" in str(exc)
    else:
        raise AssertionError("wait_for returned without its condition")

"""The form links' world, all real processes: our server (``fhir-server serve``, its message worker on) on a fresh
database, an SMTP server (aiosmtpd) and an SMS gateway stand-in it sends to, and a client's view of them: a Patient
with a birth date, a Task asking for a measure, the message that arrives, the link in it, the form behind it."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from fhir_server.config import Settings
from fhir_server.measure_tasks.tasks import new_request
from fhir_server.messaging import outbox
from fhir_server.store import form_links_store as links_store
from fhir_server.store.engine import build_engine
from tests.support.mail_server import MailServer
from tests.support.process import ServerProcess
from tests.support.server import free_port
from tests.support.sms_gateway import SmsGateway
from tests.support.waiting import wait_for

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs"
BIRTH_DATE, BIRTH_YEAR = "1990-05-17", "1990"
LINK = re.compile(r"https?://[^\s\"<>]+/app/l/[A-Za-z0-9_-]+")
SITE = "Riverside Counselling"
# Messages go out at once and retries come quickly, so the tests wait little; a reminder comes 6 s after its link.
SETTINGS = {
    "FHIR_SERVER_AUTH_REQUIRED": "false",
    "FHIR_SERVER_MESSAGE_WORKER": "true",
    "FHIR_SERVER_MESSAGE_POLL_SECONDS": "0.2",
    "FHIR_SERVER_MESSAGE_BASE_DELAY_SECONDS": "0.3",
    "FHIR_SERVER_MESSAGE_MAX_DELAY_SECONDS": "1.0",
    "FHIR_SERVER_SMTP_STARTTLS": "off",  # a loopback test server; STARTTLS itself: tests/messaging
    "FHIR_SERVER_MAIL_FROM": "Riverside Counselling <no-reply@riverside.test>",
    "FHIR_SERVER_SITE_NAME": SITE,
    "FHIR_SERVER_LINK_REMINDER_SECONDS": "6",
    "FHIR_SERVER_LINK_MAX_REMINDERS": "2",
    "FHIR_SERVER_LINK_CHECK_ATTEMPTS": "3",
    "FHIR_SERVER_TASK_EXPIRY_WORKER": "true",
    "FHIR_SERVER_TASK_EXPIRY_POLL_SECONDS": "0.5",
    "FHIR_SERVER_LOG_LEVEL": "info",
}


def until(what: Callable[[], Any], message: str, seconds: float = 30.0) -> Any:
    """Wait for something to happen (never a measure of how long it took)."""
    return wait_for(what, message, seconds)


class LinkWorld:
    def __init__(self, database_url: str, folder: Path, name: str, **env: str) -> None:
        self.mail = MailServer(folder, free_port())
        self.sms = SmsGateway(folder, free_port())
        self.server = ServerProcess(database_url, folder, name, {})
        self.server.env = {
            **SETTINGS,
            "FHIR_SERVER_SMTP_URL": f"smtp://127.0.0.1:{self.mail.port}",
            "FHIR_SERVER_SMS_GATEWAY_URL": f"http://127.0.0.1:{self.sms.port}/send",
            "FHIR_SERVER_LINK_BASE_URL": self.server.root,
            **env,
        }

        self.engine = build_engine(Settings(database_url=database_url, _env_file=None))

    def start(self) -> None:
        self.mail.start()
        self.sms.start()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.sms.stop()
        self.mail.stop()
        self.engine.dispose()

    def fhir(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.fhir_base, timeout=30, headers={"Accept": "application/fhir+json"})

    def browser_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.root, timeout=30)

    # -- the client and the request ------------------------------------------------------------------------------
    def patient(self, **fields: Any) -> str:
        patient_id = f"link-{uuid4().hex[:12]}"
        body = {"resourceType": "Patient", "id": patient_id, "birthDate": BIRTH_DATE, **fields}
        body = {k: v for k, v in body.items() if v is not None}  # birthDate=None: a Patient without one
        with self.fhir() as fhir:
            answer = fhir.put(f"/Patient/{patient_id}", json=body)
        assert answer.status_code == 201, answer.text
        return patient_id

    def ask(self, patient: str, *, channel: str = "email", address: str | None = None, **fields: Any) -> httpx.Response:
        """POST a Task asking ``patient`` for the SRS by ``channel``: the server's answer."""
        task = new_request(
            patient=patient,
            questionnaire=SRS,
            requester="Practitioner/link-therapist",
            days=4,
            channel=channel,
            address=address,
            language=fields.pop("language", None),
            write_back=fields.pop("write_back", None),
        )
        task.update(fields)
        with self.fhir() as fhir:
            return fhir.post("/Task", json=task)

    def task(self, task_id: str) -> dict[str, Any]:
        with self.fhir() as fhir:
            answer = fhir.get(f"/Task/{task_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    # -- what arrives ----------------------------------------------------------------------------------------------
    def mails_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mail.messages() if address in str(m["To"])]

    def wait_for_mails(self, address: str, count: int = 1) -> list[EmailMessage]:
        return until(lambda: (found := self.mails_to(address)) and len(found) >= count and found, f"{count} mail(s)")

    def texts_to(self, number: str) -> list[dict[str, Any]]:
        return [r["json"] for r in self.sms.delivered() if r["json"].get("to") == number]

    def mails_with(self, link: str) -> list[EmailMessage]:
        return [m for m in self.mail.messages() if link in m.get_body(("plain",)).get_content()]  # type: ignore[union-attr]

    def message_rows(self, task_id: str, *, settled: bool = False) -> list[dict[str, Any]]:
        """The message outbox rows of the Task's link, oldest first (``settled``: [] while any is pending)."""
        rows = [
            {"status": r.status, "attempts": r.attempts, "kind": r.kind}
            for link in links_store.for_task(self.engine, task_id)
            for r in sorted(outbox.rows_for_subject(self.engine, link["id"]), key=lambda r: r.id)
        ]
        return [] if settled and any(r["status"] == "pending" for r in rows) else rows

    @staticmethod
    def link_in(message: EmailMessage) -> str:
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found = LINK.findall(text)
        assert len(found) == 1, text
        return found[0]

    # -- the client's browser, as plain HTTP ---------------------------------------------------------------------
    def open_link(self, browser: httpx.Client, link: str, year: str = BIRTH_YEAR) -> httpx.Response:
        path = link.removeprefix(self.server.root)
        answer = browser.post(path, data={"birth_year": year})
        if answer.status_code == 303:  # the session cookie is Secure: httpx keeps it back from http://127.0.0.1
            browser.headers["Cookie"] = answer.headers["set-cookie"].split(";")[0]
        return answer

    def fill_srs(self, browser: httpx.Client, marks: tuple[int, int, int, int] = (90, 88, 92, 94)) -> httpx.Response:
        """Answer the SRS in the session the link opened (the cookie is in ``browser``)."""
        page = browser.get("/app/form")
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text
        fields = dict(zip(("relationship", "goals", "approach", "overall"), (str(m) for m in marks), strict=True))
        body = {"csrf_token": csrf.group(1), **{f"answer.{k}": v for k, v in fields.items()}}
        return browser.post("/app/form", data=body)

"""The sandbox mailbox: on the sandbox (FHIR_SERVER_SANDBOX=true), a channel with no transport configured is
captured as files instead of sent, one ``.eml`` per email and one ``.json`` per SMS, so /sandbox/mailbox can show
what a client would have received.  Several server processes share the folder: each file is written under a
temporary name and renamed into place, so a reader never sees half a message; names start with the capture time,
so sorting them sorts the messages."""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from fhir_server.config import Settings
from fhir_server.messaging.outbox import Outgoing
from fhir_server.messaging.smtp import build_email
from fhir_server.messaging.transport import TransientSendError, Transport

SANDBOX_FROM = "Sandbox <sandbox@sandbox.invalid>"
NAME = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{32}\.(eml|json)$")  # only names this module writes are ever opened


def mailbox_folder(settings: Settings) -> Path:
    """FHIR_SERVER_SANDBOX_MAILBOX, else beside the SQLite database file, else ./sandbox-mailbox."""
    if settings.sandbox_mailbox:
        return Path(settings.sandbox_mailbox)
    url = settings.database_url
    if url.startswith("sqlite") and ":///" in url:
        database = url.split(":///", 1)[1].split("?", 1)[0]
        if database and database != ":memory:":
            return Path(database).resolve().parent / "sandbox-mailbox"
    return Path("sandbox-mailbox")


class MailboxTransport(Transport):
    def __init__(self, folder: Path, channel: str, mail_from: str = "") -> None:
        self.folder = folder
        self.channel = channel
        self.mail_from = mail_from or SANDBOX_FROM

    def send(self, outgoing: Outgoing) -> None:
        if self.channel == "email":
            content, suffix = bytes(build_email(outgoing, self.mail_from)), "eml"
        else:
            captured = {"to": outgoing.recipient, "text": outgoing.text, "language": outgoing.language}
            content, suffix = json.dumps(captured, ensure_ascii=False, indent=1).encode("utf-8"), "json"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{uuid.uuid4().hex}.{suffix}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self.folder / f".{name}.tmp"
            temporary.write_bytes(content)
            os.replace(temporary, self.folder / name)
        except OSError as exc:
            raise TransientSendError(f"sandbox mailbox: cannot write ({type(exc).__name__})") from None


@dataclass(frozen=True, slots=True)
class Captured:
    name: str
    channel: str  # email | sms
    captured_at: datetime
    to: str
    subject: str
    language: str
    text: str
    has_html: bool


def captured(folder: Path, limit: int = 200) -> list[Captured]:
    """The newest ``limit`` captured messages, newest first."""
    if not folder.is_dir():
        return []
    names = sorted((p.name for p in folder.iterdir() if NAME.match(p.name)), reverse=True)[:limit]
    return [m for m in (read_captured(folder, n) for n in names) if m is not None]


def read_captured(folder: Path, name: str) -> Captured | None:
    """One captured message by its file name; None for a name this module did not write, or a file gone."""
    if not NAME.match(name):
        return None
    try:
        content = (folder / name).read_bytes()
    except OSError:
        return None
    when = datetime.strptime(name[:22], "%Y%m%dT%H%M%S%fZ")
    if name.endswith(".json"):
        sms = json.loads(content)
        return Captured(name, "sms", when, sms["to"], "", sms.get("language", ""), sms["text"], False)
    message = BytesParser(policy=policy.default).parsebytes(content)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    has_html = message.get_body(preferencelist=("html",)) is not None
    return Captured(
        name, "email", when, str(message["To"]), str(message["Subject"]), str(message["Content-Language"] or ""),
        text, has_html,
    )  # fmt: skip

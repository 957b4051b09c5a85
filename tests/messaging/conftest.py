"""Fixtures for the message outbox (issue 22): real peers as processes, a fresh database per test, the worker as
a thread of this process (so a renderer registered by the test is the one it uses).

- ``db``: a new database (SQLite or PostgreSQL) per test, so no other test's server or worker takes its rows and
  a row left pending by one test is never sent by the next;
- ``mail``: an SMTP server process (aiosmtpd) with STARTTLS required, AUTH, a certificate made for the run, and a
  domain it refuses for good (``refused.example``);
- ``sms``: the SMS gateway stand-in process;
- ``outbox``: the repository, a test renderer and helpers to run workers with settings pointing at those peers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fhir_server.config import Settings
from fhir_server.messaging import MessageRow, Outgoing, enqueue
from fhir_server.messaging import outbox as messages
from fhir_server.messaging.worker import MessageWorker
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import default_registry
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade
from fhir_server.store.repository import Repository
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.mail_server import MailServer, make_certificate
from tests.support.server import free_port
from tests.support.sms_gateway import SmsGateway
from tests.support.waiting import wait_for

SMTP_USER, SMTP_PASSWORD = "fit-mailer", "mail-secret-Xq7"
SMS_TOKEN = "sms-token-Zr4"
FROM = "FIT Clinic <no-reply@clinic.test>"
REFUSED = "refused.example"
_kinds = itertools.count(1)


@pytest.fixture(scope="session")
def peers_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("messaging-peers")


@pytest.fixture(scope="session")
def certificate(peers_folder: Path) -> tuple[Path, Path]:
    return make_certificate(peers_folder)


def mail_server(folder: Path, certificate: tuple[Path, Path]) -> MailServer:
    cert, key = certificate
    args = ("--cert", str(cert), "--key", str(key), "--user", SMTP_USER, "--password", SMTP_PASSWORD)
    return MailServer(folder, free_port(), *args, "--refuse-domain", REFUSED)


@pytest.fixture(scope="session")
def mail(peers_folder: Path, certificate: tuple[Path, Path]) -> Iterator[MailServer]:
    server = mail_server(peers_folder, certificate)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sms(peers_folder: Path) -> Iterator[SmsGateway]:
    gateway = SmsGateway(peers_folder, free_port())
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def db(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with sqlite_database() as url:
            upgrade(url)
            yield url
    else:
        with postgres_database(postgres_admin_url() or "") as url:
            upgrade(url)
            yield url


@dataclass
class Outbox:
    """The test's side: a repository on the test database, a renderer for a kind of this test only, and workers."""

    database_url: str
    mail: MailServer
    sms: SmsGateway
    certificate: Path
    kind: str = field(default_factory=lambda: f"test-{next(_kinds)}")
    outgoing: dict[int, Outgoing | None] = field(default_factory=dict)  # subject id → what the renderer returns
    failures: dict[int, int] = field(default_factory=dict)  # subject id → how many renders raise first
    rendered: list[int] = field(default_factory=list)  # row ids the renderer was called for
    workers: list[MessageWorker] = field(default_factory=list)
    repos: list[Repository] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.repo = self.repository()

    def repository(self) -> Repository:
        engine = build_engine(Settings(database_url=self.database_url, _env_file=None))
        repo = Repository(engine, SearchIndexer(default_registry()))
        self.repos.append(repo)
        return repo

    def render(self, _engine: Any, row: MessageRow) -> Outgoing | None:
        self.rendered.append(row.id)
        if self.failures.get(row.subject_id, 0) > 0:
            self.failures[row.subject_id] -= 1
            raise RuntimeError("the subject is locked for now")
        return self.outgoing[row.subject_id]

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "smtp_url": f"smtp://127.0.0.1:{self.mail.port}",
            "smtp_username": SMTP_USER,
            "smtp_password": SMTP_PASSWORD,
            "smtp_ca_file": str(self.certificate),
            "smtp_timeout_seconds": 5,
            "mail_from": FROM,
            "sms_gateway_url": self.sms.url,
            "sms_gateway_token": SMS_TOKEN,
            "sms_timeout_seconds": 5,
            # short delays so outage tests take seconds; the logic is the production one
            "message_poll_seconds": 0.1,
            "message_base_delay_seconds": 0.2,
            "message_max_delay_seconds": 1.0,
            "message_lease_seconds": 30,
            **overrides,
        }
        return Settings(_env_file=None, **values)

    def worker(self, repo: Repository | None = None, **overrides: Any) -> MessageWorker:
        worker = MessageWorker(repo or self.repo, self.settings(**overrides))
        worker.register_renderer(self.kind, self.render)
        self.workers.append(worker)
        worker.start()
        return worker

    def enqueue(self, outgoing: Outgoing | None, channel: str = "email", subject_id: int | None = None) -> int:
        subject = subject_id if subject_id is not None else 1000 + len(self.outgoing)
        self.outgoing[subject] = outgoing
        wake = [w.wake for w in self.workers]
        return self.repo.write(lambda s: enqueue(s, self.kind, subject, channel, wake=wake[0] if wake else None))

    def row(self, row_id: int) -> MessageRow:
        found = messages.get(self.repo.engine, row_id)
        assert found is not None
        return found

    def wait_status(self, row_id: int, status: str) -> MessageRow:
        return wait_for(lambda: (r := self.row(row_id)).status == status and r, f"row {row_id} {status}")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for repo in self.repos:
            repo.read_engine.dispose()
            repo.engine.dispose()


@pytest.fixture
def outbox(db: str, mail: MailServer, sms: SmsGateway, certificate: tuple[Path, Path]) -> Iterator[Outbox]:
    running = Outbox(db, mail, sms, certificate[0])
    yield running
    running.close()


def received_by(mail: MailServer, address: str) -> list[Any]:
    return [m for m in mail.messages() if m["To"] == address]


def sms_to(sms: SmsGateway, number: str, status: int | None = 200) -> list[dict[str, Any]]:
    import json

    return [
        r
        for r in sms.requests()
        if number in json.dumps(json.loads(r["body"])) and (status is None or r["status"] == status)
    ]

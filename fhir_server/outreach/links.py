"""One-time links to a form, made for a Task that asks for one (task_requests.py) and opened without an EHR session.

A link is made in the transaction that writes its Task (``on_written``, an engine write hook), together with its
first message and its reminders in the message outbox: a Task is stored with its link queued, or not at all.  The
link is a random 256-bit token in the URL path, nothing else (no PHI in the URL); the database keeps its SHA-256
to find it and a sealed copy so a reminder can carry it again.

Opening a link (``check``): the link must exist under that exact token (a tampered token finds nothing), not be
used, not be expired, and its Task must still be open; the client then answers the identity check (the birth year,
``FHIR_SERVER_LINK_IDENTITY_CHECK``), throttled per link and per client address; the first right answer claims the
link (single use: one conditional UPDATE) and starts an app session for that patient, that Questionnaire and that
Task, which the form then completes like an in-session one (scored, written back to the Task's EHR, the Task closed).
A GET never claims anything: mail scanners open links before their reader does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server import fhirjson, messaging
from fhir_server.auth.throttle import LoginThrottle, Throttled
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.i18n.negotiation import best, patient_languages
from fhir_server.library import Library
from fhir_server.outreach import task_requests
from fhir_server.outreach.task_requests import LinkRequest
from fhir_server.smart.sessions import AppSessionStore
from fhir_server.store import form_links_store as links_store
from fhir_server.store.engine import Database
from fhir_server.store.records import Stored, utc_now
from fhir_server.store.repository import Repository, WriteSession

log = logging.getLogger("fhir_server.outreach")
LINK_PATH = "/app/l/"
FIRST, REMINDER = "form-link", "form-reminder"  # message kinds (messages.py renders them)
TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class LinkState:
    """What a token opens: ``status`` is open | unknown | used | expired | closed, and after an answer to the
    identity check wrong | locked (throttled: ``retry_after`` seconds) | opened."""

    status: str
    link: dict[str, Any] | None = None
    retry_after: int = 0


class LinkService:
    """On ``app.state.form_links``; its ``on_written`` is registered on the engine's write hooks."""

    def __init__(
        self,
        repo: Repository,
        library: Library,
        settings: Settings,
        sessions: AppSessionStore,
        languages: Callable[[], Sequence[str]],
    ) -> None:
        self.repo = repo
        self.engine: Database = repo.engine
        self.library = library
        self.settings = settings
        self.sessions = sessions
        self.languages = languages  # the languages the app speaks (catalogues), read when a link is made
        self.wake: Callable[[], None] | None = None  # the message worker's, once it exists
        # The sandbox, run without FHIR_SERVER_PUBLIC_URL, tells where it was opened (web/sandbox_link_routes.py).
        self.learned_base: str = ""
        self.throttle = LoginThrottle(
            self.engine,
            per_user=settings.link_check_attempts,
            per_address=settings.link_address_attempts,
            window_seconds=settings.link_lock_seconds,
        )

    @property
    def base_url(self) -> str:
        return (self.settings.link_base_url or self.settings.public_url or self.learned_base).rstrip("/")

    def url(self, token: str) -> str:
        return f"{self.base_url}{LINK_PATH}{token}"

    # -- making a link, in the Task's transaction ----------------------------------------------------------------
    def on_written(self, session: WriteSession, stored: Stored) -> None:
        """An engine write hook: a Task that asks for a link and has none yet gets one (and its messages)."""
        if stored.resource_type != "Task" or stored.deleted or not stored.content:
            return
        now = session.now
        request = task_requests.link_request(fhirjson.loads_stored(stored.content), self.settings.task_days, now)
        if request is None or links_store.link_exists_for_task(session, request.task_id):
            return
        self._make(session, request, now)

    def _make(self, session: WriteSession, request: LinkRequest, now: datetime) -> None:
        if not self.base_url:
            raise _refused(
                "This server does not know the address clients reach it at (set FHIR_SERVER_PUBLIC_URL or "
                "FHIR_SERVER_LINK_BASE_URL), so it cannot send a link",
                "Task.input",
            )
        if not links_store.can_seal(session):
            raise _refused(
                "This server has no secret key (FHIR_SERVER_SECRET_KEY), so it cannot keep a link's token and "
                "address: no link is sent",
                "Task.input",
            )
        if request.expires_at <= now:
            raise _refused("The Task has expired already: no link is sent for it", "Task.restriction.period.end")
        patient = self._patient(session, request.patient)
        address = request.address or task_requests.patient_address(patient, request.channel)
        if not address:
            what = "email address" if request.channel == "email" else "mobile number for text messages"
            raise _refused(
                f"No {what} for Patient/{request.patient}: give it in the delivery input or in the Patient's telecom",
                "Task.input",
            )
        if self.settings.link_identity_check == "birth-year" and task_requests.birth_year(patient) is None:
            raise _refused(
                f"The link's identity check asks for the birth year, and Patient/{request.patient} has no birthDate "
                "on this server",
                "Task.for",
            )
        since = now - timedelta(days=1)
        if (
            links_store.count_recent_for_patient(session, request.patient, since)
            >= self.settings.link_max_per_patient_per_day
        ):
            raise FhirError(
                429,
                "throttled",
                f"Patient/{request.patient} has been sent {self.settings.link_max_per_patient_per_day} links in the "
                "last day; no more are sent today",
                headers={"Retry-After": "3600"},
            )
        ehr_id = None
        if request.write_back:
            ehr_id = links_store.registered_ehr(session, request.write_back)
            if ehr_id is None:
                raise _refused(f"'{request.write_back[:200]}' is not a registered EHR's FHIR base", "Task.input")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        link_id = links_store.insert_link(
            session,
            {
                "token_hash": token_hash(token),
                "token": token,
                "task_id": request.task_id,
                "patient": request.patient,
                "questionnaire": self._canonical(request.questionnaire),
                "ehr_id": ehr_id,
                "channel": request.channel,
                "recipient": address,
                "language": self._language(request, patient),
                "expires_at": request.expires_at,
            },
        )
        messaging.enqueue(session, FIRST, link_id, request.channel, now, wake=self.wake)
        for due in reminder_times(now, request.expires_at, self.settings):
            messaging.enqueue(session, REMINDER, link_id, request.channel, due)
        log.info("form link %s made for a Task", link_id)

    def _patient(self, session: WriteSession, patient_id: str) -> dict[str, Any] | None:
        stored = session.current("Patient", patient_id)
        return fhirjson.loads_stored(stored.content) if stored and stored.content and not stored.deleted else None

    def _canonical(self, questionnaire: str) -> str:
        """The Questionnaire's url|version: as the Task names it, or the library's preferred version of a url."""
        url, _, version = questionnaire.partition("|")
        version = version or self.library.preferred_version(url) or ""
        if not version or self.library.questionnaire(url, version) is None:
            raise FhirError(
                422,
                "not-found",
                f"The Questionnaire '{questionnaire[:200]}' is not one this server's form can show",
                expression=["Task.input"],
            )
        return f"{url}|{version}"

    def _language(self, request: LinkRequest, patient: dict[str, Any] | None) -> str | None:
        available = list(self.languages())
        for tag in [request.language, *patient_languages(patient)]:
            found = best(tag, available)
            if found:
                return found
        return None

    # -- opening a link --------------------------------------------------------------------------------------------
    def inspect(self, token: str) -> LinkState:
        """What a presented token opens, without changing anything (a GET)."""
        if not token or len(token) > 100:
            return LinkState("unknown")
        link = links_store.by_hash(self.engine, token_hash(token))
        if link is None or not hmac.compare_digest(link["token"], token):
            return LinkState("unknown")
        now = utc_now()
        if link["used_at"] is not None:
            return LinkState("used", link)
        if link["expires_at"] <= now:
            return LinkState("expired", link)
        task = self.repo.read("Task", link["task_id"])
        if task is None or task.deleted or not task_requests.is_open(fhirjson.loads_stored(task.content or "{}")):
            return LinkState("closed", link)
        return LinkState("open", link)

    @property
    def asks_identity(self) -> bool:
        return self.settings.link_identity_check == "birth-year"

    def open(self, token: str, answer: str | None, address: str | None) -> tuple[LinkState, str | None]:
        """Check the answer and claim the link: (state, the new app session's id) — the id only on success; a
        wrong answer gives state ``wrong`` (or ``locked`` once the link's attempts are used up)."""
        state = self.inspect(token)
        if state.status != "open" or state.link is None:
            return state, None
        link = state.link
        if self.asks_identity:
            try:
                attempt = self.throttle.begin(f"form-link\0{link['id']}", address)
            except Throttled as exc:
                return LinkState("locked", link, retry_after=exc.retry_after), None
            if not self._identity_ok(link, answer):
                log.info("form link %s: wrong answer to the identity check", link["id"])
                return LinkState("wrong", link), None
            self.throttle.succeeded(attempt)
        if not links_store.claim(self.engine, link["id"], token_hash(token), utc_now()):
            return LinkState("used", link), None  # another tab or device won the race
        session_id, _ = self.sessions.create_session(
            patient=link["patient"],
            questionnaire=link["questionnaire"],
            ehr_id=link["ehr_id"],
            task_id=link["task_id"],
            language=link["language"],
            app_view="form",
        )
        log.info("form link %s opened", link["id"])
        return LinkState("opened", link), session_id

    def _identity_ok(self, link: dict[str, Any], answer: str | None) -> bool:
        stored = self.repo.read("Patient", link["patient"])
        patient = fhirjson.loads_stored(stored.content) if stored and stored.content and not stored.deleted else None
        year = task_requests.birth_year(patient)
        given = (answer or "").strip()
        return year is not None and given.isdigit() and len(given) == 4 and hmac.compare_digest(given, str(year))


def reminder_times(now: datetime, expires_at: datetime, settings: Settings) -> list[datetime]:
    """Every ``link_reminder_seconds`` after the link, while before the expiry, at most ``link_max_reminders``."""
    step = timedelta(seconds=settings.link_reminder_seconds)
    times = []
    due = now + step
    while due < expires_at and len(times) < settings.link_max_reminders:
        times.append(due)
        due += step
    return times


def _refused(diagnostics: str, where: str) -> FhirError:
    return FhirError(422, "business-rule", diagnostics, expression=[where])

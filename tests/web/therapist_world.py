"""The world of the therapist's-rating browser tests (issue 21): this server with authorization on and its sandbox
EHR registration (so a launch signs in at this server's own authorization server, as a real EHR launch does), a
clinician of their own per test (so no test sees another's ratings), clients with sessions filed under local
Encounters, and a recorder of everything the pages ask and get."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fhir_server.auth import admin as accounts
from fhir_server.auth.launch_contexts import create_launch
from fhir_server.config import Settings
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
THERAPIST = "http://fit-fhir.org/fhir/Questionnaire/srs-therapist|1.0.1"
LINES = ("relationship", "goals", "approach", "overall")
PASSWORD = "a-long-password"


@contextmanager
def serving(database_url: str, backend: str, ehr_origin: str, **settings: Any) -> Iterator[RunningServer]:
    # cookie_secure: the sign-in cookie is SameSite=None; Partitioned, so a launch signs in inside an EHR's iframe
    values = {"database_url": database_url, "auth_required": True, "sandbox": True, "frame_ancestors": [ehr_origin],
              "cookie_secure": True, "_env_file": None, **settings}  # fmt: skip
    with ServerThread(Settings(**values), backend) as running:
        running.app.state.sandbox.ensure(running.root)
        yield running


def clinician(ours: RunningServer) -> str:
    """A new clinician user of this server (also their Practitioner id): the one signed in for a launch."""
    name = f"th-{uuid.uuid4().hex[:10]}"
    accounts.add_user(ours.app.state.engine, name, PASSWORD, f"Practitioner/{name}", may_pick_patient=False)
    return name


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat(timespec="seconds")


def rating(questionnaire: str, patient: str, encounter: str | None, marks: tuple[int, ...], authored: str,
           author: str | None = None) -> dict[str, Any]:  # fmt: skip
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "author": {"reference": author or f"Patient/{patient}"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(LINES, marks, strict=True)],
    }
    if encounter:
        response["encounter"] = {"reference": f"Encounter/{encounter}"}
    return response


class Client:
    """A client of ``therapist`` with sessions, written through the FHIR API as a system would."""

    def __init__(self, ours: RunningServer, therapist: str, birth_date: str = "1985-05-05") -> None:
        self.ours, self.therapist = ours, therapist
        self.id = f"tr-{uuid.uuid4().hex[:10]}"
        self._put("Patient", {"id": self.id, "birthDate": birth_date, "name": [{"text": "Kim Example"}]})

    def _put(self, kind: str, body: dict[str, Any]) -> None:
        with client_for(self.ours, mint(self.ours, "system/*.cruds")) as c:
            answer = c.put(f"/{kind}/{body['id']}", json={"resourceType": kind, **body})
            assert answer.status_code in (200, 201), answer.text

    def encounter(self, name: str) -> str:
        encounter = f"{self.id}-{name}"
        self._put("Encounter", {"id": encounter, "status": "finished", "class": {"code": "AMB"},
                                "subject": {"reference": f"Patient/{self.id}"}})  # fmt: skip
        return encounter

    def rates(self, response: dict[str, Any]) -> dict[str, Any]:
        with client_for(self.ours, mint(self.ours, "system/*.cruds")) as c:
            answer = c.post("/QuestionnaireResponse", json=response)
            assert answer.status_code == 201, answer.text
            return answer.json()

    def session(self, name: str, client_marks: tuple[int, ...], therapist_marks: tuple[int, ...] | None,
                authored: str) -> str:  # fmt: skip
        """A session filed under its Encounter: the client's SRS and, unless None, the therapist's rating."""
        encounter = self.encounter(name)
        self.rates(rating(SRS, self.id, encounter, client_marks, authored))
        if therapist_marks is not None:
            practitioner = f"Practitioner/{self.therapist}"
            self.rates(rating(THERAPIST, self.id, encounter, therapist_marks, authored, practitioner))
        return encounter

    def search(self, kind: str, **params: str) -> list[dict[str, Any]]:
        with client_for(self.ours, mint(self.ours, "system/*.rs")) as c:
            answer = c.get(f"/{kind}", params={"_count": "100", **params})
            assert answer.status_code == 200, answer.text
            return [e["resource"] for e in answer.json().get("entry", [])]


def launch_url(ours: RunningServer, user: str, patient: str | None, encounter: str | None = None,
               **params: str) -> str:  # fmt: skip
    """An EHR launch for ``user`` about ``patient`` (and ``encounter``), as the EHR's chart creates one."""
    context: dict[str, Any] = {"user": user, "need_patient_banner": True}
    if patient:
        context["patient"] = patient
    if encounter:
        context["encounter"] = encounter
    state = ours.app.state
    launch = create_launch(state.oauth, state.patients, context, "test EHR chart")["launch"]
    return f"{ours.root}/app/launch?{urlencode({'iss': ours.fhir_base, 'launch': launch, **params})}"


def sign_in(where: Any, user: str) -> None:
    where.locator("#username").fill(user)
    where.locator("#password").fill(PASSWORD)
    where.locator('button[value="login"]').click()


def launched(page: Any, ours: RunningServer, user: str, patient: str | None, landing: str,
             encounter: str | None = None, **params: str) -> None:  # fmt: skip
    page.goto(launch_url(ours, user, patient, encounter, **params))
    sign_in(page, user)
    page.wait_for_url(re.compile(landing))


def mark(where: Any, link_id: str, tens: int) -> None:
    """Set a line to ``tens`` x 10 mm with the keyboard (Home, then PageUp steps of 10)."""
    control = where.locator(f'[data-link-id="{link_id}"] [role="slider"]')
    control.focus()
    for key in ("Home", *["PageUp"] * tens):
        control.press(key)


class Recorder:
    """Everything the pages of one browser context ask our server and get back: each request's URL and body and
    each answer's headers and body (redirects have none), to search for a value that must not be there."""

    def __init__(self, context: Any, root: str) -> None:
        self.root = root
        self.seen: list[tuple[str, str]] = []
        context.on("request", self._request)
        context.on("response", self._response)

    def _request(self, request: Any) -> None:
        if request.url.startswith(self.root):
            self.seen.append((f"{request.method} {request.url}", request.url + (request.post_data or "")))

    def _response(self, response: Any) -> None:
        if not response.url.startswith(self.root):
            return
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        try:
            body = response.body().decode("utf-8", errors="replace")
        except Exception:  # a redirect's body is not kept by the browser
            body = ""
        self.seen.append((f"{response.status} {response.url}", f"{headers}\n{body}"))

    def carrying(self, value: str) -> list[str]:
        """What carried ``value`` as a number of its own (27.3, not a chart coordinate 127.35)."""
        number = re.compile(rf"(?<![\d.]){re.escape(value)}(?!\d)")
        return [what for what, text in self.seen if number.search(text)]

    def answered(self, path: str) -> bool:
        return any(what.split(" ", 1)[1].startswith(self.root + path) for what, _ in self.seen if what[0].isdigit())

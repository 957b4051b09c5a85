"""Requests to complete a measure: make one, list a client's open ones, complete and cancel them.

The conventions (shared with the link-sending in fhir_server/outreach/; validation/sdc_task.py enforces them):
code complete-questionnaire (SDC temp), status requested, intent order, ``for`` and ``owner`` the Patient,
``requester`` who asks, ``authoredOn``, ``restriction.period.end`` the expiry, one questionnaire input (the
Questionnaire's ``url|version``), and fit-task-input's delivery / language / write-back inputs.  Completed: status
completed, an output of type questionnaire-response referencing the response, ``executionPeriod.end``.

Every write goes through the engine as the server (``Policy.server()``), in the caller's write session: completing
a request belongs to the transaction that stores the response, so both are written or neither.  The caller decides
who may ask for what (the clinician view checks its session; REST writes are checked by the access policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server import fhirjson
from fhir_server.auth.policy import Policy
from fhir_server.engine.interactions import Interactions
from fhir_server.ids import new_id
from fhir_server.store.records import Stored, WriteResult, instant, utc_now
from fhir_server.store.repository import WriteSession
from fhir_server.validation.sdc_task import (
    COMPLETE_QUESTIONNAIRE,
    FIT_TASK_INPUT,
    OPEN_STATUSES,
    QUESTIONNAIRE_INPUT,
    RESPONSE_OUTPUT,
    SDC_TEMP,
    asks_for_questionnaire,
    expiry,
    local_patient,
    questionnaire_canonical,
)

TASK_CODE = {"coding": [{"system": SDC_TEMP, "code": COMPLETE_QUESTIONNAIRE, "display": "Complete Questionnaire"}]}
OPEN_QUERY = [("code", f"{SDC_TEMP}|{COMPLETE_QUESTIONNAIRE}"), ("status", ",".join(OPEN_STATUSES))]
PAGE = 200  # open requests of one client, or per page of the expiry sweep


class TaskRefused(Exception):
    """The Task cannot be closed as asked: unknown, not a request for a measure, no longer open, another
    patient's, or for another Questionnaire.  The message says which."""


@dataclass(frozen=True)
class OpenTask:
    """An open request as the clinician view lists it."""

    id: str
    questionnaire: str  # canonical url|version
    status: str
    authored: str
    expires: datetime | None  # naive UTC
    channels: tuple[str, ...]  # email, sms


def url_of(canonical: str | None) -> str:
    return (canonical or "").split("|", 1)[0]


def new_request(
    *,
    patient: str,
    questionnaire: str,
    requester: str,
    days: int,
    channel: str | None = None,
    address: str | None = None,
    language: str | None = None,
    write_back: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A Task asking ``patient`` (an id) to complete ``questionnaire`` (its canonical), requested by ``requester``
    (a reference), expiring ``days`` after now."""
    at = now or utc_now()
    inputs: list[dict[str, Any]] = [
        {"type": {"coding": [{"system": SDC_TEMP, "code": QUESTIONNAIRE_INPUT}]}, "valueCanonical": questionnaire}
    ]
    if channel:
        point = {"system": channel, **({"value": address} if address else {})}
        inputs.append({"type": _fit("delivery"), "valueContactPoint": point})
    if language:
        inputs.append({"type": _fit("language"), "valueCode": language})
    if write_back:
        inputs.append({"type": _fit("write-back"), "valueUrl": write_back})
    subject = {"reference": f"Patient/{patient}"}
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": TASK_CODE,
        "for": subject,
        "authoredOn": instant(at),
        "requester": {"reference": requester},
        "owner": subject,
        "restriction": {"period": {"end": instant(at + timedelta(days=days))}},
        "input": inputs,
    }


def _fit(code: str) -> dict[str, Any]:
    return {"coding": [{"system": FIT_TASK_INPUT, "code": code}]}


class MeasureTasks:
    """The requests of one server; ``fhir`` is its engine (the server's own policy is used whatever it holds)."""

    def __init__(self, fhir: Interactions) -> None:
        self.fhir = fhir.with_policy(Policy.server())
        self.days = fhir.settings.task_days

    def request(self, session: WriteSession, task: dict[str, Any]) -> WriteResult:
        """Store a new request (``new_request``'s Task), validated like any Task."""
        return self.fhir.create(session, "Task", task, resource_id=new_id())

    def open_for(self, patient: str, questionnaire_url: str | None = None) -> list[OpenTask]:
        """The client's open requests (for ``questionnaire_url`` only, when given), oldest first."""
        found = []
        for stored in self._open(None, patient):
            task = fhirjson.loads_stored(stored.content or "{}")
            canonical = questionnaire_canonical(task) or ""
            if questionnaire_url is not None and url_of(canonical) != url_of(questionnaire_url):
                continue
            channels = tuple(
                str(i.get("valueContactPoint", {}).get("system"))
                for i in task.get("input", [])
                if isinstance(i, dict) and isinstance(i.get("valueContactPoint"), dict)
            )
            authored = str(task.get("authoredOn", ""))
            found.append(OpenTask(stored.id, canonical, task["status"], authored, expiry(task, self.days), channels))
        return sorted(found, key=lambda t: t.authored)

    def complete(self, session: WriteSession, task_id: str, response_reference: str) -> WriteResult:
        """Mark the open Task completed by the response ``QuestionnaireResponse/<id>`` (readable in ``session``),
        in the caller's transaction.  Raises TaskRefused when the Task is not open, is for another patient than
        the response's subject, or asks for another Questionnaire (url, any version)."""
        current, task = self._current_request(session, task_id)
        response = self._response(session, response_reference)
        subject = local_patient(response.get("subject"))
        if subject is None or subject != local_patient(task.get("for")):
            raise TaskRefused(f"Task/{task_id} is for another patient than {response_reference}'s subject")
        if url_of(questionnaire_canonical(task)) != url_of(response.get("questionnaire")):
            raise TaskRefused(f"Task/{task_id} asks for another Questionnaire than {response_reference} answers")
        now = instant(utc_now())
        output = {
            "type": {"coding": [{"system": SDC_TEMP, "code": RESPONSE_OUTPUT}]},
            "valueReference": {"reference": response_reference},
        }
        task["status"] = "completed"
        task["output"] = [*task.get("output", []), output]
        task["executionPeriod"] = {**task.get("executionPeriod", {}), "end": now}
        task["lastModified"] = now
        return self.fhir.update(session, "Task", task_id, task, if_match=current.etag)

    def close_open_for(
        self, session: WriteSession, patient: str, questionnaire_url: str, response_reference: str
    ) -> list[str]:
        """Complete every open request of ``patient`` (an id or ``Patient/<id>``) for ``questionnaire_url`` (any
        version) with this response: a measure done in session stops the reminders for it.  The ids completed."""
        patient_id = patient.removeprefix("Patient/")
        done = []
        for stored in self._open(session, patient_id):
            task = fhirjson.loads_stored(stored.content or "{}")
            if url_of(questionnaire_canonical(task)) == url_of(questionnaire_url):
                self.complete(session, stored.id, response_reference)
                done.append(stored.id)
        return done

    def cancel(self, session: WriteSession, task_id: str, patient: str, reason: str) -> WriteResult:
        """Withdraw an open request of ``patient`` (the clinician's cancel button): status cancelled, ``reason`` as
        the statusReason's text."""
        current, task = self._current_request(session, task_id)
        if local_patient(task.get("for")) != patient.removeprefix("Patient/"):
            raise TaskRefused(f"Task/{task_id} is not a request of this patient")
        task["status"] = "cancelled"
        task["statusReason"] = {"text": reason}
        task["lastModified"] = instant(utc_now())
        return self.fhir.update(session, "Task", task_id, task, if_match=current.etag)

    def _current_request(self, session: WriteSession, task_id: str) -> tuple[Stored, dict[str, Any]]:
        current = session.current("Task", task_id, lock=True)
        if current is None or current.deleted:
            raise TaskRefused(f"Task/{task_id} is not known")
        task = fhirjson.loads_stored(current.content or "{}")
        if not asks_for_questionnaire(task):
            raise TaskRefused(f"Task/{task_id} is not a request to complete a measure")
        if task.get("status") not in OPEN_STATUSES:
            raise TaskRefused(f"Task/{task_id} is {task.get('status')}, no longer open")
        return current, task

    def _response(self, session: WriteSession, reference: str) -> dict[str, Any]:
        kind, _, response_id = reference.partition("/")
        stored = session.current("QuestionnaireResponse", response_id) if kind == "QuestionnaireResponse" else None
        if stored is None or stored.deleted:
            raise TaskRefused(f"{reference[:100]} is not a stored QuestionnaireResponse")
        return fhirjson.loads_stored(stored.content or "{}")

    def _open(self, session: WriteSession | None, patient_id: str) -> list[Stored]:
        params = [("subject", f"Patient/{patient_id}"), *OPEN_QUERY, ("_count", str(PAGE))]
        query = self.fhir.parse_query("Task", params)
        outcome = session.search(query) if session is not None else self.fhir.search(query).outcome
        return list(outcome.matches)

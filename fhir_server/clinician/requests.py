"""The clinician view's "Ask the client to fill in …": a request to complete a measure between sessions, as an SDC
Task (fhir_server/measure_tasks), and the client's open requests with their expiry and a cancel button.

What the view offers is read from the library: the instruments a clinician hands out (scoring.json
``administered``) that the client rates — never the therapist's own form.  The Task is for and owned by the
launch's patient, requested by the signed-in clinician (fhirUser), written back to the launch's EHR when it is a
registered one, in the Patient's preferred language when the record here says so; the link itself is sent by the
outreach worker from the Task's delivery input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_server import fhirjson
from fhir_server.clinician.instruments import InstrumentFacts, instruments
from fhir_server.engine.interactions import Interactions
from fhir_server.measure_tasks.tasks import MeasureTasks, TaskRefused, new_request, url_of
from fhir_server.validation.sdc_task import DELIVERY_SYSTEMS

BCP47 = "urn:ietf:bcp:47"
_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
CANCELLED_TEXT = "Withdrawn by the clinician"


class RequestInvalid(ValueError):
    """The form asked for something the view does not offer (an unknown measure or channel)."""


@dataclass(frozen=True)
class MeasureChoice:
    id: str  # the library folder (the form's value)
    title: str
    canonical: str  # url|version


@dataclass(frozen=True)
class OpenRequest:
    id: str
    measure: str  # its title, or the canonical when the library no longer has it
    status: str
    expires: str  # YYYY-MM-DD HH:MM UTC, or "" when it cannot be read
    channels: str  # "email, sms"


@dataclass(frozen=True)
class RequestsPanel:
    measures: list[MeasureChoice]
    open: list[OpenRequest]
    channels: tuple[str, ...] = DELIVERY_SYSTEMS


def client_rated(fhir: Interactions) -> list[MeasureChoice]:
    """The measures a clinician may ask the client to complete: handed out by clinicians, rated by the client."""
    library = fhir.library
    return [
        MeasureChoice(i.id, i.chooser_title, f"{i.url}|{library.preferred_version(i.url)}")
        for i in instruments(library)
        if _by_the_client(i)
    ]


def _by_the_client(instrument: InstrumentFacts) -> bool:
    return instrument.administered is not None and (instrument.rules is None or instrument.rules.rater != "clinician")


def requests_panel(fhir: Interactions, patient: str) -> RequestsPanel:
    measures = client_rated(fhir)
    titles = {url_of(m.canonical): m.title for m in measures}
    titles.update({i.url: i.title for i in instruments(fhir.library) if i.url not in titles})
    rows = [
        OpenRequest(
            task.id,
            titles.get(url_of(task.questionnaire), task.questionnaire),
            task.status,
            task.expires.strftime("%Y-%m-%d %H:%M UTC") if task.expires else "",
            ", ".join(task.channels),
        )
        for task in MeasureTasks(fhir).open_for(patient)
    ]
    return RequestsPanel(measures, rows)


def preferred_language(patient: dict[str, Any] | None) -> str | None:
    """The Patient's preferred communication language (BCP 47), else its first one; None when not recorded."""
    found = [c for c in (patient or {}).get("communication") or [] if isinstance(c, dict)]
    for entry in sorted(found, key=lambda c: c.get("preferred") is not True):
        for coding in (entry.get("language") or {}).get("coding") or []:
            code = coding.get("code") if isinstance(coding, dict) else None
            if coding.get("system") in (BCP47, None) and isinstance(code, str) and _TAG.fullmatch(code):
                return code
    return None


def ask(
    fhir: Interactions,
    *,
    patient: str,
    measure: str,
    channel: str,
    address: str | None,
    requester: str,
    write_back: str | None,
) -> str:
    """Store the request; returns the Task's id.  Raises RequestInvalid for a measure or channel the view does not
    offer, FhirError when the Task is refused (a malformed address: validation/sdc_task.py)."""
    chosen = next((m for m in client_rated(fhir) if m.id == measure), None)
    if chosen is None or channel not in DELIVERY_SYSTEMS:
        raise RequestInvalid("unknown measure or channel")
    stored = fhir.repo.read("Patient", patient)
    record = fhirjson.loads_stored(stored.content or "{}") if stored and not stored.deleted else None
    tasks = MeasureTasks(fhir)
    task = new_request(
        patient=patient,
        questionnaire=chosen.canonical,
        requester=requester,
        days=tasks.days,
        channel=channel,
        address=(address or "").strip() or None,
        language=preferred_language(record),
        write_back=write_back,
    )
    return fhir.repo.write(lambda session: tasks.request(session, task)).stored.id


def withdraw(fhir: Interactions, patient: str, task_id: str) -> None:
    """Cancel an open request of this patient (TaskRefused when it is not one: closed meanwhile, another's)."""
    tasks = MeasureTasks(fhir)
    fhir.repo.write(lambda session: tasks.cancel(session, task_id, patient, CANCELLED_TEXT))


__all__ = ["RequestInvalid", "TaskRefused", "ask", "requests_panel", "withdraw"]

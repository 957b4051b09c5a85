"""What a Task asks of the link service, read from the Task (SDC's questionnaire-task pattern and this project's
own inputs; fhir_server/measure_tasks validates them on write).

A Task asks for a link when it is a ``complete-questionnaire`` request that is still open, is ``for`` a Patient,
names its Questionnaire in the SDC ``questionnaire`` input and carries a ``delivery`` input (fit-task-input) whose
ContactPoint says email or sms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server.canonical import BASE
from fhir_server.search.fhirdate import parse_range

SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
TASK_INPUT = f"{BASE}/CodeSystem/fit-task-input"
OPEN_STATUSES = frozenset({"requested", "received", "accepted", "in-progress"})
CHANNELS = {"email": "email", "sms": "sms"}  # ContactPoint.system → our channel


@dataclass(frozen=True)
class LinkRequest:
    task_id: str
    patient: str
    questionnaire: str  # url or url|version, as the Task names it
    channel: str  # email | sms
    address: str | None  # None: from the Patient's telecom
    language: str | None
    write_back: str | None  # the FHIR base of a registered EHR
    expires_at: datetime  # naive UTC


def _coded(entry: dict[str, Any], system: str, code: str) -> bool:
    codings = ((entry.get("type") or {}).get("coding")) or []
    return any(isinstance(c, dict) and c.get("system") == system and c.get("code") == code for c in codings)


def task_input(task: dict[str, Any], system: str, code: str) -> dict[str, Any] | None:
    for entry in task.get("input") or []:
        if isinstance(entry, dict) and _coded(entry, system, code):
            return entry
    return None


def is_open(task: dict[str, Any]) -> bool:
    return task.get("status") in OPEN_STATUSES


def patient_of(task: dict[str, Any]) -> str | None:
    reference = str((task.get("for") or {}).get("reference") or "")
    kind, _, patient = reference.partition("/")
    return patient if kind == "Patient" and patient and "/" not in patient else None


def expiry(task: dict[str, Any], default_days: float, now: datetime) -> datetime:
    """``restriction.period.end``, else ``authoredOn`` (else now) plus the default."""
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    parsed = _instant(end, last=True)  # "2026-12-10" ends with that day
    if parsed is not None:
        return parsed
    return (_instant(task.get("authoredOn")) or now) + timedelta(days=default_days)


def _instant(value: Any, *, last: bool = False) -> datetime | None:
    """Naive UTC; the first (or last) moment of a partial date."""
    if not isinstance(value, str):
        return None
    try:
        start, end = parse_range(value)
    except ValueError:
        return None
    return end if last else start


def link_request(task: dict[str, Any], default_days: float, now: datetime) -> LinkRequest | None:
    """The link a Task asks for, or None when it asks for none."""
    code = (task.get("code") or {}).get("coding") or []
    if not any(c.get("system") == SDC_TEMP and c.get("code") == "complete-questionnaire" for c in code):
        return None
    patient = patient_of(task)
    questionnaire = (task_input(task, SDC_TEMP, "questionnaire") or {}).get("valueCanonical")
    delivery = (task_input(task, TASK_INPUT, "delivery") or {}).get("valueContactPoint") or {}
    channel = CHANNELS.get(delivery.get("system"))
    if not is_open(task) or patient is None or not isinstance(questionnaire, str) or channel is None:
        return None
    language = (task_input(task, TASK_INPUT, "language") or {}).get("valueCode")
    write_back = (task_input(task, TASK_INPUT, "write-back") or {}).get("valueUrl")
    return LinkRequest(
        task_id=str(task["id"]),
        patient=patient,
        questionnaire=questionnaire,
        channel=channel,
        address=delivery.get("value") or None,
        language=language if isinstance(language, str) else None,
        write_back=write_back if isinstance(write_back, str) else None,
        expires_at=expiry(task, default_days, now),
    )


def patient_address(patient: dict[str, Any] | None, channel: str) -> str | None:
    """The Patient's email address, or the phone number to text (``sms``, else a ``mobile`` phone), by rank."""
    found: list[tuple[int, int, str]] = []
    for point in (patient or {}).get("telecom") or []:
        if not isinstance(point, dict) or not point.get("value") or (point.get("period") or {}).get("end"):
            continue
        system = point.get("system")
        if channel == "email" and system == "email":
            preference = 0
        elif channel == "sms" and (system == "sms" or (system == "phone" and point.get("use") == "mobile")):
            preference = 0 if system == "sms" else 1
        else:
            continue
        rank = point.get("rank") if isinstance(point.get("rank"), int) else 1_000
        found.append((preference, rank, str(point["value"])))
    return min(found)[2] if found else None


def birth_year(patient: dict[str, Any] | None) -> int | None:
    value = str((patient or {}).get("birthDate") or "")
    return int(value[:4]) if len(value) >= 4 and value[:4].isdigit() else None

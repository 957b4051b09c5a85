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

from fhir_server.validation import sdc_task

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


def is_open(task: dict[str, Any]) -> bool:
    return task.get("status") in sdc_task.OPEN_STATUSES


def link_request(task: dict[str, Any], default_days: int, now: datetime) -> LinkRequest | None:
    """The link a Task asks for, or None when it asks for none (the readers are the validator's: sdc_task.py)."""
    if not sdc_task.asks_for_questionnaire(task) or not is_open(task):
        return None
    patient = sdc_task.local_patient(task.get("for"))
    questionnaire = sdc_task.questionnaire_canonical(task)
    delivery = sdc_task.fit_input(task, "delivery")
    channel = CHANNELS.get(delivery.get("system")) if isinstance(delivery, dict) else None
    if patient is None or questionnaire is None or channel is None:
        return None
    language, write_back = sdc_task.fit_input(task, "language"), sdc_task.fit_input(task, "write-back")
    return LinkRequest(
        task_id=str(task["id"]),
        patient=patient,
        questionnaire=questionnaire,
        channel=channel,
        address=delivery.get("value") or None,
        language=language if isinstance(language, str) else None,
        write_back=write_back if isinstance(write_back, str) else None,
        expires_at=sdc_task.expiry(task, default_days) or now + timedelta(days=default_days),
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

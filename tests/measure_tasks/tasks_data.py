"""A request to complete a measure as tests write it, and the library's ORS and SRS canonicals as the running
server has them (versions come from the library, not from here)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhir_server.ehr.registry import register
from fhir_server.store.records import instant, utc_now
from fhir_server.validation.sdc_task import FIT_TASK_INPUT, SDC_TEMP
from tests.support.server import RunningServer


def canonical(server: RunningServer, measure: str) -> str:
    library = server.app.state.fhir.library
    instrument = next(i for i in library.instruments if i.id == measure)
    return f"{instrument.url}|{library.preferred_version(instrument.url)}"


def fit(code: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": FIT_TASK_INPUT, "code": code}]}, **value}


def at(**delta: float) -> str:
    """An instant relative to now (requests already expired when made are refused: no link is sent for them)."""
    return instant(utc_now() + timedelta(**delta))


def sdc_task(patient: str, questionnaire: str, **extra: Any) -> dict[str, Any]:
    """Authored an hour ago, expiring in three days."""
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire"}]},
        "for": {"reference": f"Patient/{patient}"},
        "authoredOn": at(hours=-1),
        "requester": {"reference": "Practitioner/t-1"},
        "owner": {"reference": f"Patient/{patient}"},
        "restriction": {"period": {"end": at(days=3)}},
        "input": [
            {"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}]}, "valueCanonical": questionnaire},
            fit("delivery", valueContactPoint={"system": "email", "value": "client@example.org"}),
            fit("language", valueCode="fr-CA"),
        ],
        **extra,
    }


def expires(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(task["restriction"]["period"]["end"]).replace(tzinfo=None)


def registered_ehr(server: RunningServer, uid: str) -> str:
    issuer = f"https://ehr-{uid}.example/fhir"
    register(server.app.state.engine, issuer=issuer, client_id=f"app-{uid}", auth_method="none")
    return issuer

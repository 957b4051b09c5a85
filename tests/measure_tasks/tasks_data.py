"""A request to complete a measure as tests write it, and the library's ORS and SRS canonicals as the running
server has them (versions come from the library, not from here)."""

from __future__ import annotations

from typing import Any

from fhir_server.ehr.registry import register
from fhir_server.validation.sdc_task import FIT_TASK_INPUT, SDC_TEMP
from tests.support.server import RunningServer


def canonical(server: RunningServer, measure: str) -> str:
    library = server.app.state.fhir.library
    instrument = next(i for i in library.instruments if i.id == measure)
    return f"{instrument.url}|{library.preferred_version(instrument.url)}"


def fit(code: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": FIT_TASK_INPUT, "code": code}]}, **value}


def sdc_task(patient: str, questionnaire: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire"}]},
        "for": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-11-20T10:00:00+00:00",
        "requester": {"reference": "Practitioner/t-1"},
        "owner": {"reference": f"Patient/{patient}"},
        "restriction": {"period": {"end": "2026-11-24T10:00:00+00:00"}},
        "input": [
            {"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}]}, "valueCanonical": questionnaire},
            fit("delivery", valueContactPoint={"system": "email", "value": "client@example.org"}),
            fit("language", valueCode="fr-CA"),
        ],
        **extra,
    }


def registered_ehr(server: RunningServer, uid: str) -> str:
    issuer = f"https://ehr-{uid}.example/fhir"
    register(server.app.state.engine, issuer=issuer, client_id=f"app-{uid}", auth_method="none")
    return issuer

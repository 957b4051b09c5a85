"""The write-back tests' vocabulary: a patient in the EHR, a scored SRS submission on our side (response, scoring
and outbox row in one transaction), waiting for its delivery, and finding its results in the EHR exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from fhir_server import fhirjson
from fhir_server.ehr import outbox
from fhir_server.ehr.payload import WRITE_BACK_TAG
from fhir_server.scoring.resources import derived_id
from fhir_server.store.repository import WriteSession
from tests.ehr.harness import ROOT, EhrProcess, fhir_json

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
LAUNCH = "urn:test:launch"
SRS_QUESTIONNAIRE = fhir_json(json.loads((ROOT / "questionnaires" / "srs" / "questionnaire.json").read_text()))


@contextmanager
def srs_ehr(folder: Path) -> Iterator[EhrProcess]:
    """The EHR process, started and knowing the SRS (it validates responses against it); stopped at the end."""
    process = EhrProcess(folder)
    process.start()
    try:
        with process.client() as client:
            answer = client.post("/Questionnaire", **SRS_QUESTIONNAIRE)
            assert answer.status_code == 201, answer.text
        yield process
    finally:
        process.stop()


LOW = (85, 88, 80, 88)  # total 34.1: below the cutoff, an item below 9 → two Flags
HIGH = (95, 95, 95, 95)  # total 38.0: no Flag; closes the earlier ones


PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SESSION_CLINICIAN, SESSION_PROGRAM = "Practitioner/ehr-therapist", "Organization/ehr-program"


def new_patient(ehr: EhrProcess, uid: str) -> tuple[str, str]:
    """A patient and an encounter in the EHR: the launch context a submission refers to."""
    with ehr.client() as client:
        patient = client.post(
            "/Patient", **fhir_json({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
        )
        assert patient.status_code == 201, patient.text
        encounter = client.post(
            "/Encounter",
            **fhir_json(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": f"Patient/{patient.json()['id']}"},
                    # who and where (scoring/attribution.py): the app reads them with the launch's token
                    "participant": [
                        {
                            "type": [{"coding": [{"code": "PPRF", "system": PARTICIPATION}]}],
                            "individual": {"reference": SESSION_CLINICIAN},
                        }
                    ],
                    "serviceProvider": {"reference": SESSION_PROGRAM},
                }
            ),
        )
        assert encounter.status_code == 201, encounter.text
    return patient.json()["id"], encounter.json()["id"]


def srs(patient: str, encounter: str, marks: tuple[int, ...], authored: str, launch: str) -> dict[str, Any]:
    names = ("relationship", "goals", "approach", "overall")
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": LAUNCH, "value": launch},
        "questionnaire": SRS,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "author": {"reference": f"Patient/{patient}"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True)],
    }


def submit(local: FastAPI, ehr_id: int, response: dict[str, Any]) -> str:
    """What the form submission does: store and score the response and queue its delivery, in one transaction."""
    fhir = local.state.fhir

    def work(session: WriteSession) -> str:
        written = fhir.create(session, "QuestionnaireResponse", response)
        outbox.enqueue(session, ehr_id, f"QuestionnaireResponse/{written.stored.id}", None)
        return written.stored.id

    return fhir.repo.write(work)


def rows_for(local: FastAPI, response_id: str) -> list[outbox.OutboxRow]:
    return [r for r in outbox.rows(local.state.engine) if r.response_id == response_id]


def wait_for(local: FastAPI, response_id: str, state: str, timeout: float = 90) -> None:
    """Poll the state the clinician screen shows (a deadline for a hung test, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while outbox.delivery_state(local.state.engine, response_id) != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"not '{state}' after {timeout} s: {rows_for(local, response_id)}")
        time.sleep(0.1)


def wait_for_attempts(local: FastAPI, response_id: str, attempts: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(r.attempts >= attempts for r in rows_for(local, response_id)):
        assert time.monotonic() < deadline, f"fewer than {attempts} attempts: {rows_for(local, response_id)}"
        time.sleep(0.05)


def local_results(local: FastAPI, response_id: str) -> list[dict[str, Any]]:
    """The response's scored results as stored here: the scoring Provenance's targets, then the Provenance."""
    repo = local.state.fhir.repo
    provenance = repo.read("Provenance", derived_id(response_id, "scoring"))
    assert provenance is not None, "the submission was not scored"
    body = fhirjson.loads_stored(provenance.content)
    targets = []
    for target in body["target"]:
        kind, _, rid = target["reference"].partition("/")
        targets.append(fhirjson.loads_stored(repo.read(kind, rid).content))
    return [*targets, body]


def _one(client: Any, resource_type: str, **params: str) -> dict[str, Any]:
    found = client.get(f"/{resource_type}", params={**params, "_count": "10"})
    assert found.status_code == 200, found.text
    entries = found.json().get("entry", [])
    assert len(entries) == 1, f"{len(entries)} {resource_type} in the EHR for {params}"
    return entries[0]["resource"]


def in_ehr_once(ehr: EhrProcess, local: FastAPI, response_id: str) -> dict[str, dict[str, Any]]:
    """Every resource of the submission is in the EHR exactly once (found by its identifier or write-back tag),
    as it is here now, and refers to the EHR's copies of the others.  Returns them by local ``Type/id``."""
    found: dict[str, dict[str, Any]] = {}
    submitted = fhirjson.loads_stored(local.state.fhir.repo.read("QuestionnaireResponse", response_id).content)
    key = submitted["identifier"]
    with ehr.client() as client:
        response = _one(client, "QuestionnaireResponse", identifier=f"{key['system']}|{key['value']}")
        found[f"QuestionnaireResponse/{response_id}"] = response
        for resource in local_results(local, response_id):
            key = f"{resource['resourceType']}/{resource['id']}"
            if resource["resourceType"] == "Provenance":
                copy = _one(client, "Provenance", _tag=f"{WRITE_BACK_TAG}|{key}")
            else:
                key_identifier = resource["identifier"][0]
                search = f"{key_identifier['system']}|{key_identifier['value']}"
                copy = _one(client, resource["resourceType"], identifier=search)
                assert copy["status"] == resource["status"], key
            assert copy["id"] != resource["id"]  # the EHR assigned its own
            found[key] = copy
    ehr_ids = {key: f"{key.split('/')[0]}/{copy['id']}" for key, copy in found.items()}
    provenance = found[f"Provenance/{derived_id(response_id, 'scoring')}"]
    assert {t["reference"] for t in provenance["target"]} == {
        ehr_ids[k] for k in found if not k.startswith(("Provenance/", "QuestionnaireResponse/"))
    }
    assert provenance["entity"][0]["what"]["reference"] == ehr_ids[f"QuestionnaireResponse/{response_id}"]
    for key, copy in found.items():
        if key.startswith("Observation/") and response_id in key:
            assert copy["derivedFrom"] == [{"reference": ehr_ids[f"QuestionnaireResponse/{response_id}"]}]
        if key.startswith("Flag/"):
            assert copy["author"]["identifier"]["value"] == "fit-scoring-engine"  # our engine, by identifier
    return found

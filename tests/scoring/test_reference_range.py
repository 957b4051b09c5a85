"""Observation.referenceRange where the instrument has a cutoff (issue 5 point 2): the SRS total's is 36, the
ORS total's follows the client's age band (25 adults, 28 adolescents); measures
without a published cutoff carry none."""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.fhir import post, put

EXAMPLES = Path(__file__).resolve().parents[2] / "questionnaires"


def _example(instrument: str, name: str, patient: str) -> dict:
    response = json.loads((EXAMPLES / instrument / "examples" / name).read_text())["response"]
    return {**response, "subject": {"reference": f"Patient/{patient}"}}


def _total(client, patient: str, code: str) -> dict:
    found = client.get("/Observation", params={"subject": f"Patient/{patient}", "code": code}).json()
    return found["entry"][0]["resource"]


def test_srs_and_ors_totals_carry_their_cutoffs(client, uid):
    adult, teen = f"adult-{uid}", f"teen-{uid}"
    assert (
        put(
            client, f"/Patient/{adult}", {"resourceType": "Patient", "id": adult, "birthDate": "1980-01-01"}
        ).status_code
        == 201
    )
    assert (
        put(client, f"/Patient/{teen}", {"resourceType": "Patient", "id": teen, "birthDate": "2011-06-01"}).status_code
        == 201
    )
    assert post(client, "/QuestionnaireResponse", _example("srs", "valid-total-35-9.json", adult)).status_code == 201
    for patient in (adult, teen):
        answer = post(client, "/QuestionnaireResponse", _example("ors", "valid-self-total-25-0.json", patient))
        assert answer.status_code == 201, answer.text
    srs = _total(client, adult, "http://fit-fhir.org/fhir/CodeSystem/fit-measures|srs-total")
    assert srs["referenceRange"][0]["low"]["value"] == 36 and srs["referenceRange"][0]["low"]["code"] == "{score}"
    ors_adult = _total(client, adult, "http://fit-fhir.org/fhir/CodeSystem/fit-measures|ors-total")
    ors_teen = _total(client, teen, "http://fit-fhir.org/fhir/CodeSystem/fit-measures|ors-total")
    assert ors_adult["referenceRange"][0]["low"]["value"] == 25
    assert ors_teen["referenceRange"][0]["low"]["value"] == 28

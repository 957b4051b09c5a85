"""The data of bench/search.py: a pure function of (seed, patient number), so the checks can regenerate any patient.

Per patient ~100 (±40 %) SRS/ORS total-score Observations (4 item components each) over 2 years, one
QuestionnaireResponse per 10 Observations (their derivedFrom) and 2-5 Flags, about 40 % of them active.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from bench.shipped import canonical

START = datetime(2024, 11, 1)  # the data spans two years from here (naive UTC)
WINDOW_MINUTES = 2 * 365 * 24 * 60
OBS_PER_QR = 10
SNOMED, UCUM = "http://snomed.info/sct", "http://unitsofmeasure.org"
MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INSTRUMENTS = {  # id: (SNOMED code, display, item codes)
    "srs": ("720482000", "Session Rating Scale score", ("relationship", "goals-topics", "approach-method", "overall")),
    "ors": ("716613004", "Outcome Rating Scale score", ("individual", "interpersonal", "social", "overall")),
}
QUESTIONNAIRE = "http://fit-fhir.org/fhir/Questionnaire/{}"
FLAG_CODES = ("alliance-concern", "no-improvement", "deterioration", "dropout-risk")


@dataclass
class Plan:
    id: str
    observations: list[tuple[str, str, int, tuple[float, ...], str]]  # id, instrument, minute, items, QR id
    responses: list[tuple[str, str, int, list[str]]]  # id, instrument, minute, Observation ids
    flags: list[tuple[str, str, str, int]]  # id, status, code, minute


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def observation_counts(seed: int, observations: int, patients: int) -> list[int]:
    """~N/M per patient, ±40 % in pairs so that the total stays exact."""
    base, extra = divmod(observations, patients)
    counts = [base + (i < extra) for i in range(patients)]
    rng = random.Random(f"{seed}:counts")
    for i in range(0, patients - 1, 2):
        shift = rng.randint(0, int(base * 0.4))
        counts[i], counts[i + 1] = counts[i] + shift, counts[i + 1] - shift
    return counts


def plan_patient(seed: int, number: int, n_obs: int) -> Plan:
    rng = random.Random(f"{seed}:patient:{number}")
    pid = _uuid(rng)
    minutes = sorted(rng.sample(range(WINDOW_MINUTES), n_obs))  # distinct: dates sort without ties
    observations, responses = [], []
    first = rng.randrange(2)
    for block, start in enumerate(range(0, n_obs, OBS_PER_QR)):
        instrument = ("srs", "ors")[(block + first) % 2]
        qid = _uuid(rng)
        obs = [
            (_uuid(rng), instrument, m, tuple(round(rng.uniform(0, 10), 1) for _ in range(4)), qid)
            for m in minutes[start : start + OBS_PER_QR]
        ]
        observations.extend(obs)
        responses.append((qid, instrument, minutes[start] - 5, [o[0] for o in obs]))
    flags = [
        (
            _uuid(rng),
            "active" if rng.random() < 0.4 else "inactive",
            rng.choice(FLAG_CODES),
            rng.randrange(WINDOW_MINUTES),
        )
        for _ in range(rng.randint(2, 5))
    ]
    return Plan(pid, observations, responses, flags)


def _when(minute: int) -> str:
    return (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _score(value: float) -> dict:
    return {"value": round(value, 1), "unit": "{score}", "system": UCUM, "code": "{score}"}


def resources_of(number: int, plan: Plan) -> Iterator[tuple[str, str, dict]]:
    subject = {"reference": f"Patient/{plan.id}"}
    yield (
        "Patient",
        plan.id,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "http://fit-fhir.org/fhir/sid/client-number", "value": f"C{number:07d}"}],
            "name": [{"family": f"Client{number}", "given": ["Alex"]}],
            "gender": ("female", "male", "other")[number % 3],
            "birthDate": f"{1950 + number % 55}-{1 + number % 12:02d}-{1 + number % 28:02d}",
        },
    )
    items = {o[4]: o[3] for o in plan.observations}
    for qid, instrument, minute, _ in plan.responses:
        names = INSTRUMENTS[instrument][2]
        yield (
            "QuestionnaireResponse",
            qid,
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": canonical(instrument),
                "status": "completed",
                "subject": subject,
                "authored": _when(minute),
                "item": [
                    {"linkId": name, "answer": [{"valueDecimal": value}]}
                    for name, value in zip(names, items[qid], strict=True)
                ],
            },
        )
    for oid, instrument, minute, scores, qid in plan.observations:
        code, display, names = INSTRUMENTS[instrument]
        yield (
            "Observation",
            oid,
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}],
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                "subject": subject,
                "effectiveDateTime": _when(minute),
                "issued": _when(minute + 1),
                "valueQuantity": _score(sum(scores)),
                "derivedFrom": [{"reference": f"QuestionnaireResponse/{qid}"}],
                "component": [
                    {
                        "code": {"coding": [{"system": MEASURES, "code": f"{instrument}-{name}"}]},
                        "valueQuantity": _score(v),
                    }
                    for name, v in zip(names, scores, strict=True)
                ],
            },
        )
    for fid, status, code, minute in plan.flags:
        yield (
            "Flag",
            fid,
            {
                "resourceType": "Flag",
                "status": status,
                "category": [
                    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical"}]}
                ],
                "code": {"coding": [{"system": "http://fit-fhir.org/fhir/CodeSystem/fit-flags", "code": code}]},
                "subject": subject,
                "period": {"start": _when(minute)},
            },
        )

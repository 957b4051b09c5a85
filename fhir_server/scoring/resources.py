"""Scores → FHIR resources: Observations, Flags and the Provenance that ties them to their response.

Ids and identifiers are derived from the response and the score or rule, so re-scoring the same response writes
new versions of the same resources instead of new resources, and a delivery to an EHR can be a conditional
create on the identifier.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from fhir_server import __version__
from fhir_server.canonical import BASE, FLAGS_CODESYSTEM, MEASURES_CODESYSTEM, SNOMED, UCUM
from fhir_server.fhirjson import FhirDecimal
from fhir_server.scoring.flags import RaisedFlag
from fhir_server.scoring.rules import Score, ScoringRules

OBSERVATION_IDENTIFIER = f"{BASE}/scored-observation"
FLAG_IDENTIFIER = f"{BASE}/raised-flag"
ENGINE_DEVICE_ID = "fit-scoring-engine"
ENGINE = {"reference": f"Device/{ENGINE_DEVICE_ID}", "display": "FIT scoring engine"}
SURVEY = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}
    ]
}
PRIORITY = {"high": "PH", "medium": "PM", "low": "PL", "info": "PN"}
SERIES_CODE = "respondent-series"


def derived_id(response_id: str, part: str) -> str:
    candidate = f"{response_id}-{part}"
    if len(candidate) <= 64:
        return candidate
    return "fit-" + hashlib.sha256(candidate.encode()).hexdigest()[:40]


def quantity(value: Decimal, unit: str) -> dict[str, Any]:
    return {"value": FhirDecimal(str(value)), "unit": unit, "system": UCUM, "code": unit}


def engine_device() -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": ENGINE_DEVICE_ID,
        "status": "active",
        "deviceName": [{"name": "FIT scoring engine", "type": "manufacturer-name"}],
        "version": [{"value": __version__}],
        "type": {"text": "Software that scores feedback-informed-treatment measures"},
    }


def _code(score: Score) -> dict[str, Any]:
    coding = [{"system": MEASURES_CODESYSTEM, "code": score.code, "display": score.display or score.code}]
    if score.snomed:
        coding.append({"system": SNOMED, "code": score.snomed})
    return {"coding": coding, "text": score.display or score.code}


def observations(
    rules: ScoringRules,
    response: dict[str, Any],
    scores: dict[str, Decimal | None],
    items: dict[str, Decimal],
    interpretation_for: dict[str, list[dict[str, Any]]],
    series: str,
    status: str,
    cutoff_for: dict[str, Decimal] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for score in rules.scores:
        value = scores.get(score.id)
        if score.observation != "own" or value is None:
            continue
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": derived_id(response["id"], score.id),
            "identifier": [{"system": OBSERVATION_IDENTIFIER, "value": f"{response['id']}#{score.id}"}],
            "status": status,
            "category": [SURVEY],
            "code": _code(score),
        }
        for key in ("subject", "encounter"):
            if key in response:
                observation[key] = response[key]
        if "authored" in response:
            observation["effectiveDateTime"] = response["authored"]
        performer = response.get("source") or response.get("author")
        if performer:
            observation["performer"] = [performer]
        observation["valueQuantity"] = quantity(value, score.unit)
        if interpretation_for.get(score.id):
            observation["interpretation"] = interpretation_for[score.id]
        cutoff = (cutoff_for or {}).get(score.id)
        if cutoff is not None:  # the published cutoff: scores at or above it are outside the clinical range
            observation["referenceRange"] = [
                {"low": quantity(cutoff, score.unit), "text": f"At or above {cutoff}: outside the clinical range"}
            ]
        observation["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{response['id']}"}]
        observation["component"] = _components(rules, score, scores, items, series)
        out.append(observation)
    return out


def _components(
    rules: ScoringRules, score: Score, scores: dict[str, Decimal | None], items: dict[str, Decimal], series: str
) -> list[dict[str, Any]]:
    components = []
    for link_id in score.items:
        rule = rules.item(link_id)
        if rule is not None and link_id in items:
            components.append(
                {
                    "code": {"coding": [{"system": MEASURES_CODESYSTEM, "code": rule.code, "display": rule.display}]},
                    "valueQuantity": quantity(items[link_id], "{score}"),
                }
            )
    for other_id in score.components:
        other = rules.score(other_id)
        if other is not None and scores.get(other_id) is not None:
            components.append({"code": _code(other), "valueQuantity": quantity(scores[other_id], other.unit)})  # type: ignore[arg-type]
    components.append(
        {
            "code": {"coding": [{"system": MEASURES_CODESYSTEM, "code": SERIES_CODE, "display": "Respondent series"}]},
            "valueString": series,
        }
    )
    return components


def flag(response: dict[str, Any], raised: RaisedFlag, observation_id: str | None) -> dict[str, Any]:
    rule = raised.rule
    resource: dict[str, Any] = {
        "resourceType": "Flag",
        "id": derived_id(response["id"], rule.id),
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                "valueCodeableConcept": {
                    "coding": [{"system": "http://hl7.org/fhir/flag-priority-code", "code": PRIORITY[rule.severity]}]
                },
            }
        ],
        "identifier": [{"system": FLAG_IDENTIFIER, "value": f"{response['id']}#{rule.id}"}],
        "status": "active",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": "clinical",
                        "display": "Clinical",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": FLAGS_CODESYSTEM, "code": rule.code, "display": rule.display or rule.code}],
            "text": raised.message,
        },
        "subject": response["subject"],
        "period": {"start": response.get("authored")} if response.get("authored") else {},
        "author": ENGINE,
    }
    if observation_id:
        resource["extension"].insert(
            0,
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
                "valueReference": {"reference": f"Observation/{observation_id}"},
            },
        )
    if "encounter" in response:
        resource["encounter"] = response["encounter"]
    if not resource["period"]:
        del resource["period"]
    return resource


def provenance(response: dict[str, Any], targets: list[str], recorded: str, activity: str) -> dict[str, Any]:
    agents = [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}
                ]
            },
            "who": ENGINE,
        }
    ]
    author = response.get("author") or response.get("source")
    if author:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": author,
            }
        )
    return {
        "resourceType": "Provenance",
        "id": derived_id(response["id"], "scoring"),
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": activity}]
        },
        "agent": agents,
        "entity": [{"role": "source", "what": {"reference": f"QuestionnaireResponse/{response['id']}"}}],
    }

"""Scores → FHIR resources: Observations, Flags and the Provenance that ties them to their response.

Ids and identifiers are derived from the response and the score or rule, so re-scoring the same response writes
new versions of the same resources instead of new resources, and a delivery to an EHR can be a conditional
create on the identifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_server import __version__
from fhir_server.canonical import (
    BASE,
    CLINICIAN_ONLY,
    FLAGS_CODESYSTEM,
    MEASURES_CODESYSTEM,
    SECURITY_CODESYSTEM,
    SNOMED,
    UCUM,
)
from fhir_server.fhirjson import FhirDecimal
from fhir_server.scoring import texts
from fhir_server.scoring.flags import RaisedFlag
from fhir_server.scoring.rules import Comparator, Score, ScoringRules

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
# Set on a Flag a clinician acknowledged in the clinician view (clinician/view.py): never reopened by scoring.
ACKNOWLEDGED = f"{BASE}/StructureDefinition/flag-acknowledgement"
# Who rated, on the Flags a rating raised (an Observation carries it as a component): "self", or "other:<who>".
SERIES_EXTENSION = f"{BASE}/StructureDefinition/respondent-series"


@dataclass(frozen=True)
class Scoring:
    """One response's results, ready to be written as Observations."""

    scores: dict[str, Decimal | None]
    items: dict[str, Decimal]
    interpretations: dict[str, list[dict[str, Any]]]
    series: str
    status: str
    cutoffs: dict[str, tuple[Comparator, Decimal]]  # score id → its cutoff as this site runs it
    notes: list[str]


def flag_code(flag: dict[str, Any]) -> str | None:
    """The rule's code of a Flag scoring raised (its fit-flags coding)."""
    coding = (flag.get("code") or {}).get("coding") or []
    return next((c.get("code") for c in coding if isinstance(c, dict) and c.get("system") == FLAGS_CODESYSTEM), None)


def series_of(resource: dict[str, Any]) -> str:
    """The rater series of an Observation (its component) or a Flag (its extension); "self" when unmarked."""
    for extension in resource.get("extension", ()):
        if extension.get("url") == SERIES_EXTENSION:
            return extension.get("valueString", "self")
    for component in resource.get("component", ()):
        if component.get("code", {}).get("coding", [{}])[0].get("code") == SERIES_CODE:
            return component.get("valueString", "self")
    return "self"


def label_clinician_only(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with the clinician-only security label (canonical.py), once."""
    meta = resource.setdefault("meta", {})
    labels = meta.setdefault("security", [])
    if not any(label.get("system") == SECURITY_CODESYSTEM and label.get("code") == CLINICIAN_ONLY for label in labels):
        labels.append({"system": SECURITY_CODESYSTEM, "code": CLINICIAN_ONLY, "display": "For clinicians only"})
    return resource


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


def observations(rules: ScoringRules, response: dict[str, Any], scoring: Scoring) -> list[dict[str, Any]]:
    out = []
    for score in rules.scores:
        value = scoring.scores.get(score.id)
        if score.observation != "own" or value is None:
            continue
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": derived_id(response["id"], score.id),
            "identifier": [{"system": OBSERVATION_IDENTIFIER, "value": f"{response['id']}#{score.id}"}],
            "status": scoring.status,
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
        if scoring.interpretations.get(score.id):
            observation["interpretation"] = scoring.interpretations[score.id]
        if scoring.notes:
            observation["note"] = [{"text": note} for note in scoring.notes]
        if score.id in scoring.cutoffs:
            observation["referenceRange"] = [_reference_range(rules, score, *scoring.cutoffs[score.id])]
        observation["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{response['id']}"}]
        observation["component"] = _components(rules, score, scoring.scores, scoring.items, scoring.series)
        out.append(label_clinician_only(observation) if rules.rater == "clinician" else observation)
    return out


def _reference_range(rules: ScoringRules, score: Score, comparator: Comparator, cutoff: Decimal) -> dict[str, Any]:
    """The scores the cutoff does not flag.  A range's low is inclusive: with ``<=`` the cutoff itself is flagged,
    so the range starts one step (the score's precision) above it."""
    step = Decimal(1).scaleb(-score.decimals)
    text = texts.reference_range(rules.domain, comparator, cutoff)
    if comparator in ("<", "<="):
        low = cutoff if comparator == "<" else cutoff + step
        return {"low": quantity(low, score.unit), "text": text}
    high = cutoff if comparator == ">" else cutoff - step
    return {"high": quantity(high, score.unit), "text": text}


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


def flag(response: dict[str, Any], rules: ScoringRules, raised: RaisedFlag, series: str) -> dict[str, Any]:
    rule = raised.rule
    details = []
    for score_id in raised.score_ids:  # the Observation of each score that raised it (a WAI-SR subscale's sum)
        carrier = rules.observation_of(score_id)
        reference = f"Observation/{derived_id(response['id'], carrier.id)}" if carrier else None
        if reference and reference not in details:
            details.append(reference)
    return flag_resource(
        derived_id(response["id"], rule.id),
        f"{response['id']}#{rule.id}",
        (rule.code, rule.display or rule.code, raised.message),
        rule.severity,
        details,
        response,
        series,
    )


def flag_resource(
    flag_id: str,
    identifier: str,
    code: tuple[str, str, str],
    severity: str,
    details: list[str],
    about: dict[str, Any],
    series: str,
) -> dict[str, Any]:
    """A Flag scoring raises: ``code`` is (fit-flags code, display, the sentence for the clinician); subject,
    encounter and start are ``about``'s (the response, or the result, that raised it)."""
    resource: dict[str, Any] = {
        "resourceType": "Flag",
        "id": flag_id,
        "extension": [
            *(
                {"url": "http://hl7.org/fhir/StructureDefinition/flag-detail", "valueReference": {"reference": ref}}
                for ref in details
            ),
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                "valueCodeableConcept": {
                    "coding": [{"system": "http://hl7.org/fhir/flag-priority-code", "code": PRIORITY[severity]}]
                },
            },
            {"url": SERIES_EXTENSION, "valueString": series},
        ],
        "identifier": [{"system": FLAG_IDENTIFIER, "value": identifier}],
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
        "code": {"coding": [{"system": FLAGS_CODESYSTEM, "code": code[0], "display": code[1]}], "text": code[2]},
        "subject": about["subject"],
        "author": ENGINE,
    }
    start = about.get("authored") or about.get("effectiveDateTime")
    if start:
        resource["period"] = {"start": start}
    if "encounter" in about:
        resource["encounter"] = about["encounter"]
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

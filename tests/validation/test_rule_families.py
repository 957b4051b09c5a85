"""The validator's rule families through the HTTP API, on SQLite and PostgreSQL: for each, a valid example that
``$validate`` passes and create stores, and an invalid one that ``$validate`` calls an error and create refuses
with the same issues (examples written for these tests)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.api.fhir import post

TEXT = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
CORE = "http://hl7.org/fhir/StructureDefinition/"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Moreau"}], **extra}


def observation(**extra: Any) -> dict[str, Any]:
    code = {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}
    return {"resourceType": "Observation", "status": "final", "code": code, **extra}


def medication_request(**dose: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "sertraline 50 mg"},
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [{"doseAndRate": [dose]}],
    }


def document(full_url: str) -> dict[str, Any]:
    composition = {
        "resourceType": "Composition",
        "id": "c1",
        "status": "final",
        "type": {"text": "Summary"},
        "date": "2026-01-01",
        "author": [{"reference": "Practitioner/pr1"}],
        "title": "Summary",
        "subject": {"reference": "Patient/p1"},
    }
    practitioner = {"resourceType": "Practitioner", "id": "pr1"}
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:4d7f5a2e-6b7c-4f0e-9a35-0d2a5b6c7e80"},
        "type": "document",
        "timestamp": "2026-01-01T10:00:00Z",
        "entry": [
            {"fullUrl": "http://example.org/fhir/Composition/c1", "resource": composition},
            {"fullUrl": full_url, "resource": patient(id="p1")},
            {"fullUrl": "http://example.org/fhir/Practitioner/pr1", "resource": practitioner},
        ],
    }


def search_parameter(components: int) -> dict[str, Any]:
    component = {"definition": "http://hl7.org/fhir/SearchParameter/Observation-code", "expression": "code"}
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/code-value",
        "name": "code-value",
        "status": "active",
        "description": "code and value",
        "code": "code-value",
        "base": ["Observation"],
        "type": "composite",
        "expression": "Observation",
        "component": [component] * components,
    }


# (family, valid resource, invalid resource, the FHIRPath of the invalid one's first error)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("structure-unknown-element", patient(), patient(nickname="Jo"), "Patient.nickname"),
    ("structure-json-type", patient(active=True), patient(active="true"), "Patient.active"),
    ("structure-array", patient(), {"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    # R4, not R4B: Evidence.exposureBackground is R4; ActivityDefinition.subjectCanonical came with R4B
    (
        "structure-r4-not-r4b",
        {"resourceType": "Evidence", "status": "draft", "exposureBackground": {"reference": "EvidenceVariable/e"}},
        {"resourceType": "ActivityDefinition", "status": "draft", "subjectCanonical": "http://example.org/G"},
        "ActivityDefinition.subjectCanonical",
    ),
    # A core datatype profile on one type of a choice (doseAndRate.dose[x]: Range, or Quantity as SimpleQuantity)
    # applies to that type only: a Range is read as a Range, a Quantity must meet SimpleQuantity (no comparator)
    (
        "structure-choice-type-profile",
        medication_request(doseRange={"low": {"value": 1}, "high": {"value": 2}}),
        medication_request(doseQuantity={"value": 1, "comparator": "<"}),
        "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity",
    ),
    ("primitive-date", patient(birthDate="1990-02-28"), patient(birthDate="1990-02-30"), "Patient.birthDate"),
    (
        "primitive-base64",
        {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD"},
        {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD!!!!"},
        "Binary.data",
    ),
    (
        "primitive-uuid-case",
        patient(identifier=[{"system": "urn:uuid:4d7f5a2e-6b7c-4f0e-9a35-0d2a5b6c7e80", "value": "1"}]),
        patient(identifier=[{"system": "urn:uuid:4D7F5A2E-6B7C-4F0E-9A35-0D2A5B6C7E80", "value": "1"}]),
        "Patient.identifier[0].system",
    ),
    (
        "primitive-absolute-system",
        patient(
            maritalStatus={
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            }
        ),
        patient(maritalStatus={"coding": [{"system": "v3-MaritalStatus", "code": "M"}]}),
        "Patient.maritalStatus.coding[0].system",
    ),
    (
        "narrative",
        patient(text=TEXT),
        patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">&nbsp;</div>'}),
        "Patient.text.div",
    ),
    ("binding-code", observation(), {**observation(), "status": "done"}, "Observation.status"),
    (
        "binding-codeable-concept",
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
                ]
            },
        },
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"text": "active"},
        },
        "AllergyIntolerance.clinicalStatus",
    ),
    (
        "invariant",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z"},
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": {"start": "2026-01-01T12:00:00Z", "end": "2026-01-01T11:00:00Z"},
        },
        "Encounter.period",
    ),
    (
        "extension-unknown-core",
        patient(extension=[{"url": CORE + "patient-birthPlace", "valueAddress": {"city": "Lyon"}}]),
        patient(extension=[{"url": CORE + "patient-favouriteColour", "valueString": "blue"}]),
        "Patient.extension[0]",
    ),
    (
        "extension-context",
        patient(
            name=[
                {
                    "family": "Moreau",
                    "_family": {"extension": [{"url": CORE + "humanname-own-name", "valueString": "Moreau"}]},
                }
            ]
        ),
        patient(
            name=[{"family": "Moreau", "extension": [{"url": CORE + "humanname-own-name", "valueString": "Moreau"}]}]
        ),
        "Patient.name[0].extension[0]",
    ),
    (
        "extension-value-type",
        patient(
            birthDate="1990-01-01",
            _birthDate={"extension": [{"url": CORE + "patient-birthTime", "valueDateTime": "1990-01-01T08:00:00Z"}]},
        ),
        patient(
            birthDate="1990-01-01",
            _birthDate={"extension": [{"url": CORE + "patient-birthTime", "valueString": "eight"}]},
        ),
        "Patient._birthDate.extension[0].valueString",
    ),
    (
        "reference-target",
        {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": "Patient/p"}},
        {
            "resourceType": "Flag",
            "status": "active",
            "code": {"text": "x"},
            "subject": {"reference": "Questionnaire/q"},
        },
        "Flag.subject.reference",
    ),
    (
        "reference-element-ids",
        patient(name=[{"id": "n1", "family": "a"}, {"id": "n2", "family": "b"}]),
        patient(name=[{"id": "n1", "family": "a"}, {"id": "n1", "family": "b"}]),
        "Patient.name[1]",
    ),
    (
        "bundle-full-url",
        document("http://example.org/fhir/Patient/p1"),
        document("Patient/p1"),
        "Bundle.entry[1].fullUrl",
    ),
    ("definition-search-parameter", search_parameter(2), search_parameter(1), "SearchParameter"),
    (
        "definition-attachment",
        {
            "resourceType": "Media",
            "status": "completed",
            "content": {"contentType": "text/plain", "data": "QUJD", "size": 3},
        },
        {
            "resourceType": "Media",
            "status": "completed",
            "content": {"contentType": "text/plain", "data": "QUJD", "size": 100},
        },
        "Media.content.size",
    ),
    (
        "profile-vital-sign",
        observation(),
        {
            **observation(),
            "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
            "valueQuantity": {"value": 37, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
        },
        "Observation.category",
    ),
]


def _errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


@pytest.mark.parametrize(("family", "valid", "invalid", "where"), CASES, ids=[c[0] for c in CASES])
def test_a_valid_example_passes_and_is_stored(client, family, valid, invalid, where):
    resource_type = valid["resourceType"]
    outcome = post(client, f"/{resource_type}/$validate", valid).json()
    assert not _errors(outcome), outcome
    created = post(client, f"/{resource_type}", copy.deepcopy(valid))
    assert created.status_code == 201, created.text[:500]


@pytest.mark.parametrize(("family", "valid", "invalid", "where"), CASES, ids=[c[0] for c in CASES])
def test_create_refuses_exactly_what_validate_calls_an_error(client, family, valid, invalid, where):
    resource_type = invalid["resourceType"]
    outcome = post(client, f"/{resource_type}/$validate", invalid).json()
    errors = _errors(outcome)
    assert errors and any(where in issue.get("expression", []) for issue in errors), outcome
    created = post(client, f"/{resource_type}", copy.deepcopy(invalid))
    assert created.status_code == 400, created.text[:300]
    assert _errors(created.json()) == errors

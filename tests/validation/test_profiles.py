"""Validation against profiles (fhir_server/validation/profiles.py, slicing.py) and the core profiles' data
(core_profiles.py, data/r4_profiles.json).

Every profile and resource here is written for these tests: small profiles with their snapshot, one rule each,
a resource that conforms and one that does not; then the specification's own bodytemp, vitalsigns and bp.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import Issue
from fhir_server.validation.core_profiles import core_profile
from fhir_server.validation.profiles import profile_issues

SD = "http://hl7.org/fhir/StructureDefinition/"
EX = "https://example.org/fhir/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BODYTEMP = f"{SD}bodytemp"
VITALSIGNS = f"{SD}vitalsigns"


def element(
    element_id: str, min_: int = 0, max_: str = "*", *types: str | dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """An ElementDefinition; ``base=(min, max)`` adds the base cardinality a generated snapshot carries."""
    path = ".".join(part.split(":")[0] for part in element_id.split("."))
    out: dict[str, Any] = {"id": element_id, "path": path, "min": min_, "max": max_}
    if "base" in extra:
        low, high = extra.pop("base")
        out["base"] = {"path": path, "min": low, "max": high}
    if types:
        out["type"] = [{"code": t} if isinstance(t, str) else t for t in types]
    return {**out, **extra}


def profile(url: str, type_: str, *elements: dict[str, Any], kind: str = "resource") -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": url.rsplit("/", 1)[-1],
        "status": "active",
        "kind": kind,
        "abstract": False,
        "type": type_,
        "baseDefinition": f"{SD}{type_}",
        "derivation": "constraint",
        "snapshot": {"element": [element(type_), *elements]},
    }


def resolver(*profiles: dict[str, Any]):
    local = {p["url"]: p for p in profiles}
    return lambda url: local.get(url) or core_profile(url)


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, issues
    return issues[0]


def errors(issues: list[Issue]) -> list[Issue]:
    return [issue for issue in issues if issue.severity == "error"]


def pattern_code(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# A profile without a snapshot, or for another type


def test_a_profile_without_a_snapshot_is_not_supported():
    differential_only = {**profile(f"{EX}diff-only", "Patient"), "differential": {"element": []}}
    del differential_only["snapshot"]
    issue = only(profile_issues({"resourceType": "Patient"}, differential_only, resolver()))
    assert (issue.code, issue.severity) == ("not-supported", "error")
    assert issue.diagnostics.startswith(f"Profile {EX}diff-only has no snapshot")


def test_a_profile_for_another_type_is_an_error():
    issue = only(profile_issues({"resourceType": "Patient"}, profile(f"{EX}obs", "Observation"), resolver()))
    assert (issue.code, issue.expression) == ("structure", ["Patient"])


# Cardinality

NAMED_PATIENT = profile(
    f"{EX}named-patient",
    "Patient",
    element("Patient.name", 1, "*", "HumanName", base=(0, "*")),
    element("Patient.photo", 0, "0", "Attachment", base=(0, "*")),
    element("Patient.address", 0, "1", "Address", base=(0, "*")),
    element("Patient.birthDate", 1, "1", "date", base=(0, "1")),
    element("Patient.gender", 0, "1", "code", base=(0, "1")),
)


def test_cardinality_the_profile_tightens():
    patient = {"resourceType": "Patient", "name": [{"family": "Ng"}], "birthDate": "1970-01-01"}
    assert profile_issues(patient, NAMED_PATIENT, resolver()) == []

    issue = only(profile_issues(_without(patient, "name"), NAMED_PATIENT, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("required", "error", ["Patient.name"])
    assert issue.diagnostics == f"Patient.name: minimum required = 1, but only found 0 (from {EX}named-patient)"

    issue = only(
        profile_issues({**patient, "photo": [{"url": "https://example.org/me.png"}]}, NAMED_PATIENT, resolver())
    )
    assert (issue.code, issue.expression) == ("structure", ["Patient.photo"])
    assert "max allowed = 0, but found 1" in issue.diagnostics

    issue = only(profile_issues({**patient, "address": [{"city": "A"}, {"city": "B"}]}, NAMED_PATIENT, resolver()))
    assert (issue.code, issue.expression) == ("structure", ["Patient.address"])
    assert "max allowed = 1, but found 2" in issue.diagnostics


def _without(resource: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in keys}


def test_a_primitive_present_only_by_its_extension_counts():
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    patient = {"resourceType": "Patient", "name": [{"family": "Ng"}], "_birthDate": absent}
    assert profile_issues(patient, NAMED_PATIENT, resolver()) == []
    issue = only(profile_issues(_without(patient, "_birthDate"), NAMED_PATIENT, resolver()))
    assert (issue.code, issue.expression) == ("required", ["Patient.birthDate"])


def test_the_base_cardinality_is_left_to_the_structure_walk():
    # gender is 0..1 in the profile as in R4: two genders are the structure walk's to report, not the profile's
    patient = {"resourceType": "Patient", "name": [{"family": "Ng"}], "birthDate": "1970", "gender": ["male", "female"]}
    assert profile_issues(patient, NAMED_PATIENT, resolver()) == []


# Types: a choice with fewer types, references with fewer targets

PRACTITIONER_PROFILE = profile(f"{EX}staff", "Practitioner")
TYPED_OBSERVATION = profile(
    f"{EX}typed-observation",
    "Observation",
    element("Observation.value[x]", 0, "1", "Quantity", "CodeableConcept", base=(0, "1")),
    element("Observation.subject", 0, "1", {"code": "Reference", "targetProfile": [f"{SD}Patient"]}, base=(0, "1")),
    element("Observation.performer", 0, "*", {"code": "Reference", "targetProfile": [f"{EX}staff"]}, base=(0, "*")),
)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"valueString": "high"}, "Observation.valueString", "type string is not allowed here, only Quantity"),
        ({"subject": {"reference": "Group/7"}}, "Observation.subject", "a reference to Group is not allowed"),
        ({"subject": {"reference": "https://ehr.example.org/fhir/Group/7/_history/2"}}, "Observation.subject", "Group"),
        (
            {"subject": {"reference": "#g", "display": "x"}, "contained": [{"resourceType": "Group", "id": "g"}]},
            "Observation.subject",
            "Group",
        ),
        (
            {"performer": [{"reference": "Practitioner/1"}, {"reference": "Organization/2"}]},
            "Observation.performer[1]",
            "only to Practitioner",
        ),
    ],
)
def test_types_and_reference_targets_the_profile_restricts(change, where, message):
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    fine = {
        **observation,
        "valueQuantity": {"value": 1},
        "subject": {"reference": "Patient/1"},
        "performer": [{"reference": "Practitioner/1"}],
    }
    assert profile_issues(fine, TYPED_OBSERVATION, resolver(PRACTITIONER_PROFILE)) == []
    issue = only(profile_issues({**observation, **change}, TYPED_OBSERVATION, resolver(PRACTITIONER_PROFILE)))
    assert (issue.code, issue.severity, issue.expression) == ("structure", "error", [where])
    assert message in issue.diagnostics and issue.diagnostics.endswith(f"(from {EX}typed-observation)")


def test_references_and_types_that_cannot_be_judged_are_not_errors():
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    unknown = {
        "subject": {"reference": "urn:uuid:6b3c6f4e-8a1f-4a7e-9d3c-2f1e0b6a9c11"},  # no type to read
        "valueFoo": 1,  # no such type: the structure walk's
    }
    assert profile_issues({**observation, **unknown}, TYPED_OBSERVATION, resolver(PRACTITIONER_PROFILE)) == []
    # a target profile that cannot be resolved: its type is unknown, so no target is refused
    assert (
        profile_issues({**observation, "performer": [{"reference": "Organization/2"}]}, TYPED_OBSERVATION, resolver())
        == []
    )


# fixed[x] and pattern[x]

FIXED_AND_PATTERN = profile(
    f"{EX}fixed-and-pattern",
    "Observation",
    element("Observation.status", 1, "1", "code", fixedCode="final"),
    element(
        "Observation.code",
        1,
        "1",
        "CodeableConcept",
        patternCodeableConcept={
            "coding": [{"system": LOINC, "code": "8867-4"}, {"system": "http://snomed.info/sct", "code": "364075005"}]
        },
    ),
    element("Observation.valueQuantity", 0, "1", "Quantity", fixedQuantity={"value": 1, "unit": "beat"}),
)


def test_fixed_is_exact_and_pattern_is_contained():
    code = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "364075005", "display": "Heart rate"},
            {"system": "https://codes.example.org", "code": "hr"},
            {"system": LOINC, "code": "8867-4"},
        ],
        "text": "Heart rate",
    }
    fine = {
        "resourceType": "Observation",
        "status": "final",
        "code": code,
        "valueQuantity": {"value": 1.0, "unit": "beat"},
    }
    assert profile_issues(fine, FIXED_AND_PATTERN, resolver()) == []

    issue = only(profile_issues({**fine, "status": "amended"}, FIXED_AND_PATTERN, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("value", "error", ["Observation.status"])
    assert issue.diagnostics.startswith('Observation.status: value must be exactly "final", found "amended"')

    # each coding of the pattern must match one of the instance's: the SNOMED one is missing
    issue = only(profile_issues({**fine, "code": pattern_code("8867-4")}, FIXED_AND_PATTERN, resolver()))
    assert (issue.code, issue.expression) == ("value", ["Observation.code"])
    assert "must match the pattern" in issue.diagnostics

    # fixed: no more than the fixed value either
    extra = {**fine, "valueQuantity": {"value": 1, "unit": "beat", "system": UCUM}}
    assert only(profile_issues(extra, FIXED_AND_PATTERN, resolver())).expression == ["Observation.valueQuantity"]


# Slicing

BLOOD_PRESSURE = profile(
    f"{EX}blood-pressure",
    "Observation",
    element(
        "Observation.component",
        2,
        "*",
        "BackboneElement",
        base=(0, "*"),
        slicing={"discriminator": [{"type": "pattern", "path": "code"}], "ordered": True, "rules": "closed"},
    ),
    element("Observation.component.code", 1, "1", "CodeableConcept", base=(1, "1")),
    element("Observation.component:systolic", 1, "1", "BackboneElement", sliceName="systolic"),
    element(
        "Observation.component:systolic.code", 1, "1", "CodeableConcept", patternCodeableConcept=pattern_code("8480-6")
    ),
    element("Observation.component:systolic.value[x]", 1, "1", "Quantity", base=(0, "1")),
    element("Observation.component:diastolic", 1, "1", "BackboneElement", sliceName="diastolic"),
    element(
        "Observation.component:diastolic.code", 1, "1", "CodeableConcept", patternCodeableConcept=pattern_code("8462-4")
    ),
    element("Observation.component:diastolic.value[x]", 1, "1", "Quantity", base=(0, "1")),
)


def component(code: str, value: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": {"coding": [{"system": LOINC, "code": code, "display": "BP"}]}}
    if value is not None:
        out["valueQuantity"] = {"value": value, "unit": "mm[Hg]"}
    return out


def blood_pressure(*components: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "BP"}, "component": list(components)}


def test_slices_by_pattern_closed_and_ordered():
    assert (
        profile_issues(blood_pressure(component("8480-6", 120), component("8462-4", 80)), BLOOD_PRESSURE, resolver())
        == []
    )

    issues = profile_issues(blood_pressure(component("8480-6", 120)), BLOOD_PRESSURE, resolver())
    assert [(i.code, i.expression) for i in issues] == [("required", ["Observation.component"])] * 2
    assert issues[0].diagnostics.startswith("Observation.component: minimum required = 2, but only found 1")
    assert issues[1].diagnostics == (
        f"Observation.component: slice 'diastolic': minimum required = 1, but only found 0 (from {EX}blood-pressure)"
    )

    closed = blood_pressure(component("8480-6", 120), component("8462-4", 80), component("8478-0", 93))
    issue = only(profile_issues(closed, BLOOD_PRESSURE, resolver()))
    assert (issue.code, issue.expression) == ("structure", ["Observation.component[2]"])
    assert "matches none of the slices of Observation.component, and its slicing is closed" in issue.diagnostics

    issue = only(
        profile_issues(blood_pressure(component("8462-4", 80), component("8480-6", 120)), BLOOD_PRESSURE, resolver())
    )
    assert (issue.code, issue.expression) == ("structure", ["Observation.component[1]"])
    assert "slice 'systolic' is out of order" in issue.diagnostics

    twice = blood_pressure(component("8480-6", 120), component("8480-6", 121), component("8462-4", 80))
    issue = only(profile_issues(twice, BLOOD_PRESSURE, resolver()))
    assert (issue.code, issue.expression) == ("structure", ["Observation.component"])
    assert "slice 'systolic': max allowed = 1, but found 2" in issue.diagnostics


def test_a_slice_checks_its_own_children():
    issue = only(
        profile_issues(blood_pressure(component("8480-6"), component("8462-4", 80)), BLOOD_PRESSURE, resolver())
    )
    assert (issue.code, issue.expression) == ("required", ["Observation.component[0].value"])
    assert issue.diagnostics.startswith("Observation.component[0].value: minimum required = 1, but only found 0")


MRN_FIRST = profile(
    f"{EX}mrn-first",
    "Patient",
    element(
        "Patient.identifier",
        0,
        "*",
        "Identifier",
        base=(0, "*"),
        slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "openAtEnd"},
    ),
    element("Patient.identifier:mrn", 0, "1", "Identifier", sliceName="mrn"),
    element("Patient.identifier:mrn.system", 1, "1", "uri", base=(0, "1"), fixedUri="urn:example:mrn"),
)


def test_open_at_end_slicing():
    mrn, other = {"system": "urn:example:mrn", "value": "1"}, {"system": "urn:example:insurer", "value": "2"}
    assert profile_issues({"resourceType": "Patient", "identifier": [mrn, other]}, MRN_FIRST, resolver()) == []
    issue = only(profile_issues({"resourceType": "Patient", "identifier": [other, mrn]}, MRN_FIRST, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("structure", "error", ["Patient.identifier[1]"])
    assert "openAtEnd" in issue.diagnostics


VALUE_BY_TYPE = profile(
    f"{EX}value-by-type",
    "Observation",
    element(
        "Observation.value[x]",
        0,
        "1",
        "Quantity",
        "string",
        base=(0, "1"),
        slicing={"discriminator": [{"type": "type", "path": "$this"}], "rules": "closed"},
    ),
    element("Observation.value[x]:valueQuantity", 0, "1", "Quantity", sliceName="valueQuantity"),
    element("Observation.value[x]:valueQuantity.system", 1, "1", "uri", base=(0, "1"), fixedUri=UCUM),
    element("Observation.value[x]:valueString", 0, "1", "string", sliceName="valueString"),
)


def test_choice_slices_by_type():
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    fine = {**observation, "valueQuantity": {"value": 1, "system": UCUM, "code": "mg"}}
    assert profile_issues(fine, VALUE_BY_TYPE, resolver()) == []
    assert profile_issues({**observation, "valueString": "trace"}, VALUE_BY_TYPE, resolver()) == []

    issue = only(profile_issues({**observation, "valueQuantity": {"value": 1}}, VALUE_BY_TYPE, resolver()))
    assert (issue.code, issue.expression) == ("required", ["Observation.valueQuantity.system"])
    other = {**observation, "valueQuantity": {"value": 1, "system": "urn:example:units"}}
    assert only(profile_issues(other, VALUE_BY_TYPE, resolver())).expression == ["Observation.valueQuantity.system"]

    # a type the choice does not allow is one issue, not also "no slice" for the closed slicing
    issue = only(profile_issues({**observation, "valueBoolean": True}, VALUE_BY_TYPE, resolver()))
    assert (issue.code, issue.expression) == ("structure", ["Observation.valueBoolean"])


MEASURED_OR_ABSENT = profile(
    f"{EX}measured-or-absent",
    "Observation",
    element(
        "Observation.component",
        0,
        "*",
        "BackboneElement",
        base=(0, "*"),
        slicing={"discriminator": [{"type": "exists", "path": "value"}], "rules": "closed"},
    ),
    element("Observation.component:measured", 0, "*", "BackboneElement", sliceName="measured"),
    element("Observation.component:measured.value[x]", 1, "1", "Quantity", base=(0, "1")),
    element("Observation.component:absent", 0, "*", "BackboneElement", sliceName="absent"),
    element("Observation.component:absent.value[x]", 0, "0", "Quantity", base=(0, "1")),
    element("Observation.component:absent.dataAbsentReason", 1, "1", "CodeableConcept", base=(0, "1")),
)


def test_slices_by_exists():
    absent = {"code": {"text": "b"}, "dataAbsentReason": {"text": "asked"}}
    fine = blood_pressure(component("8480-6", 120), absent)
    assert profile_issues(fine, MEASURED_OR_ABSENT, resolver()) == []
    issue = only(
        profile_issues(
            blood_pressure(component("8480-6", 120), {"code": {"text": "b"}}), MEASURED_OR_ABSENT, resolver()
        )
    )
    assert (issue.code, issue.expression) == ("required", ["Observation.component[1].dataAbsentReason"])


PATIENTS_ONLY = profile(
    f"{EX}patients-only",
    "Bundle",
    element(
        "Bundle.entry",
        0,
        "*",
        "BackboneElement",
        base=(0, "*"),
        slicing={"discriminator": [{"type": "profile", "path": "resource"}], "rules": "closed"},
    ),
    element("Bundle.entry:patient", 0, "*", "BackboneElement", sliceName="patient"),
    element(
        "Bundle.entry:patient.resource", 1, "1", {"code": "Patient", "profile": [f"{EX}named-patient"]}, base=(0, "1")
    ),
)


def test_slices_by_profile():
    named = {"resourceType": "Patient", "name": [{"family": "Ng"}], "birthDate": "1970"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": named}]}
    assert profile_issues(bundle, PATIENTS_ONLY, resolver(NAMED_PATIENT)) == []
    unnamed = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _without(named, "name")}]}
    issue = only(profile_issues(unnamed, PATIENTS_ONLY, resolver(NAMED_PATIENT)))
    assert (issue.code, issue.expression) == ("structure", ["Bundle.entry[0]"])


def test_a_discriminator_through_resolve_is_skipped_with_a_warning():
    by_target = profile(
        f"{EX}members",
        "Observation",
        element(
            "Observation.hasMember",
            1,
            "*",
            "Reference",
            base=(0, "*"),
            slicing={"discriminator": [{"type": "value", "path": "resolve().code"}], "rules": "closed"},
        ),
        element("Observation.hasMember:heart", 1, "1", "Reference", sliceName="heart"),
    )
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "panel"}}
    issue = only(profile_issues({**observation, "hasMember": [{"reference": "Observation/1"}]}, by_target, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("not-supported", "warning", ["Observation.hasMember"])
    assert "resolve()" in issue.diagnostics
    # with no member at all, neither the element's nor the slice's minimum can be met, whatever the discriminator
    issues = profile_issues(observation, by_target, resolver())
    assert [(i.code, i.expression) for i in issues] == [("required", ["Observation.hasMember"])] * 2


def test_re_slices_are_matched_within_their_slice():
    coded = profile(
        f"{EX}reslice",
        "Observation",
        element("Observation.code", 1, "1", "CodeableConcept", base=(1, "1")),
        element(
            "Observation.code.coding",
            0,
            "*",
            "Coding",
            base=(0, "*"),
            slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"},
        ),
        element(
            "Observation.code.coding:loinc",
            1,
            "*",
            "Coding",
            sliceName="loinc",
            slicing={"discriminator": [{"type": "value", "path": "code"}], "rules": "open"},
        ),
        element("Observation.code.coding:loinc.system", 1, "1", "uri", fixedUri=LOINC),
        element("Observation.code.coding:loinc/vital", 1, "1", "Coding", sliceName="loinc/vital"),
        element("Observation.code.coding:loinc/vital.code", 1, "1", "code", fixedCode="8867-4"),
    )
    observation = {"resourceType": "Observation", "status": "final", "code": pattern_code("8867-4")}
    assert profile_issues(observation, coded, resolver()) == []
    issue = only(profile_issues({**observation, "code": pattern_code("8310-5")}, coded, resolver()))
    assert (issue.code, issue.expression) == ("required", ["Observation.code.coding"])
    assert "slice 'loinc/vital': minimum required = 1" in issue.diagnostics


# Extensions, sliced by url, each checked against its definition

COLOUR = f"{EX}favourite-colour"
COLOUR_DEFINITION = profile(
    COLOUR,
    "Extension",
    element("Extension.extension", 0, "0", "Extension", base=(0, "*")),
    element("Extension.url", 1, "1", "uri", base=(1, "1"), fixedUri=COLOUR),
    element("Extension.value[x]", 1, "1", "string", base=(0, "1")),
    kind="complex-type",
)
COLOURFUL_PATIENT = profile(
    f"{EX}colourful-patient",
    "Patient",
    element(
        "Patient.extension",
        0,
        "*",
        "Extension",
        base=(0, "*"),
        slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
    ),
    element("Patient.extension:colour", 1, "1", {"code": "Extension", "profile": [COLOUR]}, sliceName="colour"),
)


def test_extension_slices_are_matched_by_url_and_checked_against_their_definition():
    other = {"url": "https://example.org/fhir/StructureDefinition/other", "valueBoolean": True}
    fine = {"resourceType": "Patient", "extension": [other, {"url": COLOUR, "valueString": "teal"}]}
    assert profile_issues(fine, COLOURFUL_PATIENT, resolver(COLOUR_DEFINITION)) == []

    issue = only(
        profile_issues(
            {"resourceType": "Patient", "extension": [other]}, COLOURFUL_PATIENT, resolver(COLOUR_DEFINITION)
        )
    )
    assert (issue.code, issue.expression) == ("required", ["Patient.extension"])
    assert issue.diagnostics == (
        f"Patient.extension: slice 'colour': minimum required = 1, but only found 0 (from {EX}colourful-patient)"
    )

    coded = {"resourceType": "Patient", "extension": [{"url": COLOUR, "valueCode": "teal"}]}
    issue = only(profile_issues(coded, COLOURFUL_PATIENT, resolver(COLOUR_DEFINITION)))
    assert (issue.code, issue.expression) == ("structure", ["Patient.extension[0].valueCode"])
    assert issue.diagnostics.endswith(f"(from {COLOUR})")

    empty = {"resourceType": "Patient", "extension": [{"url": COLOUR, "extension": [other]}]}
    issues = profile_issues(empty, COLOURFUL_PATIENT, resolver(COLOUR_DEFINITION))
    assert [(i.code, i.expression) for i in issues] == [
        ("structure", ["Patient.extension[0].extension"]),
        ("required", ["Patient.extension[0].value"]),
    ]


def test_an_extension_whose_definition_is_unknown_is_still_matched_by_its_url():
    fine = {"resourceType": "Patient", "extension": [{"url": COLOUR, "valueCode": "teal"}]}
    issue = only(profile_issues(fine, COLOURFUL_PATIENT, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("not-found", "warning", ["Patient.extension[0]"])
    assert errors(profile_issues({"resourceType": "Patient"}, COLOURFUL_PATIENT, resolver())) != []


# Bindings the profile adds, judged when the caller can expand the value set

CODES = "https://example.org/fhir/ValueSet/lab-codes"
FLAGS = "https://example.org/fhir/ValueSet/flags"
GENDERS = "https://example.org/fhir/ValueSet/two-genders"
BOUND = profile(
    f"{EX}bound",
    "Observation",
    element(
        "Observation.status",
        1,
        "1",
        "code",
        base=(1, "1"),
        binding={"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/observation-status|4.0.1"},
    ),
    element(
        "Observation.code",
        1,
        "1",
        "CodeableConcept",
        base=(1, "1"),
        binding={"strength": "required", "valueSet": f"{CODES}|2"},
    ),
    element(
        "Observation.interpretation",
        0,
        "*",
        "CodeableConcept",
        base=(0, "*"),
        binding={"strength": "extensible", "valueSet": FLAGS},
    ),
)
VALUE_SETS = {
    CODES: {(LOINC, "2345-7"), (LOINC, "2339-0")},
    FLAGS: {("urn:example:flags", "H"), ("urn:example:flags", "L")},
    GENDERS: {
        ("http://hl7.org/fhir/administrative-gender", "male"),
        ("http://hl7.org/fhir/administrative-gender", "female"),
    },
    "http://hl7.org/fhir/ValueSet/observation-status": {("http://hl7.org/fhir/observation-status", "final")},
}


def expand(url: str) -> set[tuple[str, str]] | None:
    return VALUE_SETS.get(url)


def test_required_and_extensible_bindings():
    fine = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:example:local", "code": "glu"}, {"system": LOINC, "code": "2345-7"}]},
        "interpretation": [{"coding": [{"system": "urn:example:flags", "code": "H"}]}, {"text": "borderline"}],
    }
    assert profile_issues(fine, BOUND, resolver(), expand) == []

    issue = only(profile_issues({**fine, "code": pattern_code("1558-6")}, BOUND, resolver(), expand))
    assert (issue.code, issue.severity, issue.expression) == ("code-invalid", "error", ["Observation.code"])
    assert f"http://loinc.org#1558-6 is not in the value set {CODES} (required binding)" in issue.diagnostics

    issue = only(
        profile_issues({**fine, "interpretation": [pattern_code("A", "urn:example:other")]}, BOUND, resolver(), expand)
    )
    assert (issue.code, issue.severity, issue.expression) == (
        "code-invalid",
        "warning",
        ["Observation.interpretation[0]"],
    )

    # no expansion, no verdict; the base spec's own binding (status) is the structure walk's
    assert profile_issues({**fine, "code": pattern_code("1558-6")}, BOUND, resolver()) == []
    assert profile_issues({**fine, "status": "bogus"}, BOUND, resolver(), expand) == []


def test_a_required_binding_on_a_code():
    two_genders = profile(
        f"{EX}two-genders",
        "Patient",
        element("Patient.gender", 0, "1", "code", base=(0, "1"), binding={"strength": "required", "valueSet": GENDERS}),
    )
    assert profile_issues({"resourceType": "Patient", "gender": "female"}, two_genders, resolver(), expand) == []
    issue = only(profile_issues({"resourceType": "Patient", "gender": "other"}, two_genders, resolver(), expand))
    assert (issue.code, issue.expression) == ("code-invalid", ["Patient.gender"])


# The profile's own invariants

DOM_2 = "contained.contained.empty()"  # R4 DomainResource's, copied into every snapshot
CONSTRAINED = profile(
    f"{EX}reachable-patient",
    "Patient",
    element(
        "Patient.telecom",
        0,
        "*",
        "ContactPoint",
        base=(0, "*"),
        constraint=[
            {
                "key": "rp-2",
                "severity": "warning",
                "human": "A phone number says its use",
                "expression": "system = 'phone' implies use.exists()",
                "source": f"{EX}reachable-patient",
            },
        ],
    ),
)
CONSTRAINED["snapshot"]["element"][0]["constraint"] = [
    {
        "key": "dom-2",
        "severity": "error",
        "human": "no nested contained",
        "expression": DOM_2,
        "source": f"{SD}DomainResource",
    },
    {
        "key": "rp-1",
        "severity": "error",
        "human": "Name or telecom",
        "expression": "name.exists() or telecom.exists()",
        "source": f"{EX}reachable-patient",
    },
]


def test_the_profiles_invariants():
    fine = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "555", "use": "home"}]}
    assert profile_issues(fine, CONSTRAINED, resolver()) == []

    issue = only(profile_issues({"resourceType": "Patient", "gender": "male"}, CONSTRAINED, resolver()))
    assert (issue.code, issue.severity, issue.expression) == ("invariant", "error", ["Patient"])
    assert issue.diagnostics == f"Patient: constraint rp-1 failed: Name or telecom (from {EX}reachable-patient)"

    issue = only(
        profile_issues(
            {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "555"}]}, CONSTRAINED, resolver()
        )
    )
    assert (issue.code, issue.severity, issue.expression) == ("invariant", "warning", ["Patient.telecom[0]"])


def test_the_base_invariants_are_left_to_the_structure_walk():
    nested = {
        "resourceType": "Patient",
        "name": [{"family": "Ng"}],
        "contained": [{"resourceType": "Group", "contained": [{"resourceType": "Patient"}]}],
    }
    assert profile_issues(nested, CONSTRAINED, resolver()) == []


# Type profiles

SIMPLE_VALUE = profile(
    f"{EX}simple-value",
    "Observation",
    element("Observation.value[x]", 0, "1", {"code": "Quantity", "profile": [f"{SD}SimpleQuantity"]}, base=(0, "1")),
)


def test_a_type_profile_is_validated_recursively():
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert profile_issues({**observation, "valueQuantity": {"value": 1, "unit": "g"}}, SIMPLE_VALUE, resolver()) == []
    issues = profile_issues({**observation, "valueQuantity": {"value": 1, "comparator": "<"}}, SIMPLE_VALUE, resolver())
    assert sorted((i.code, i.expression[0]) for i in issues) == [
        ("invariant", "Observation.valueQuantity"),
        ("structure", "Observation.valueQuantity.comparator"),
    ]
    assert all(i.diagnostics.endswith(f"(from {SD}SimpleQuantity)") for i in issues)

    issue = only(profile_issues({**observation, "valueQuantity": {"value": 1}}, SIMPLE_VALUE, lambda url: None))
    assert (issue.code, issue.severity, issue.expression) == ("not-found", "warning", ["Observation.valueQuantity"])


# The specification's own profiles


def body_temperature(**changes: Any) -> dict[str, Any]:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}], "text": "Temperature"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-05T08:15:00+01:00",
        "valueQuantity": {"value": 37.2, "unit": "C", "system": UCUM, "code": "Cel"},
    }
    observation.update(changes)
    return {key: value for key, value in observation.items() if value is not None}


def ucum_bodytemp(url: str) -> set[tuple[str, str]] | None:
    return {(UCUM, "Cel"), (UCUM, "[degF]")} if url == "http://hl7.org/fhir/ValueSet/ucum-bodytemp" else None


@pytest.mark.parametrize("url", [BODYTEMP, VITALSIGNS])
def test_a_body_temperature_conforms_to_the_core_profiles(url):
    assert profile_issues(body_temperature(), core_profile(url), core_profile, ucum_bodytemp) == []
    # vs-1 (a dateTime precise to the day) as HL7's validator reads it: a Period is not a dateTime
    period = {"start": "2024-03-05T08:00:00Z", "end": "2024-03-05T08:15:00Z"}
    assert (
        profile_issues(
            body_temperature(effectiveDateTime=None, effectivePeriod=period), core_profile(url), core_profile
        )
        == []
    )
    assert profile_issues(body_temperature(effectiveDateTime="2024-03-05"), core_profile(url), core_profile) == []


@pytest.mark.parametrize(
    ("changes", "code", "where", "message"),
    [
        (
            {"code": pattern_code("276885007", "http://snomed.info/sct")},
            "required",
            "Observation.code.coding",
            "slice 'BodyTempCode': minimum required = 1",
        ),
        (
            {"category": [pattern_code("laboratory", "http://terminology.hl7.org/CodeSystem/observation-category")]},
            "required",
            "Observation.category",
            "slice 'VSCat': minimum required = 1",
        ),
        (
            {"category": None},
            "required",
            "Observation.category",
            "Observation.category: minimum required = 1, but only found 0",
        ),
        (
            {"effectiveDateTime": None},
            "required",
            "Observation.effective",
            "Observation.effective: minimum required = 1, but only found 0",
        ),
        ({"effectiveDateTime": "2024-03"}, "invariant", "Observation.effectiveDateTime", "constraint vs-1 failed"),
        (
            {"subject": {"reference": "Group/ward-3"}},
            "structure",
            "Observation.subject",
            "a reference to Group is not allowed here, only to Patient",
        ),
        ({"valueQuantity": None}, "invariant", "Observation", "constraint vs-2 failed"),
        (
            {"valueQuantity": None, "valueString": "37.2"},
            "structure",
            "Observation.valueString",
            "type string is not allowed here, only Quantity",
        ),
        (
            {"valueQuantity": {"value": 37.2, "unit": "C", "system": "urn:example:units", "code": "Cel"}},
            "value",
            "Observation.valueQuantity.system",
            '"http://unitsofmeasure.org"',
        ),
        (
            {"valueQuantity": {"value": 37.2, "system": UCUM, "code": "Cel"}},
            "required",
            "Observation.valueQuantity.unit",
            "minimum required = 1",
        ),
        (
            {"valueQuantity": {"value": 310.3, "unit": "K", "system": UCUM, "code": "K"}},
            "code-invalid",
            "Observation.valueQuantity.code",
            "'K' is not in the value set http://hl7.org/fhir/ValueSet/ucum-bodytemp",
        ),
        (
            {"referenceRange": [{"low": {"value": 36, "comparator": ">", "unit": "C", "system": UCUM, "code": "Cel"}}]},
            "structure",
            "Observation.referenceRange[0].low.comparator",
            "max allowed = 0",
        ),
    ],
)
def test_what_the_bodytemp_profile_refuses(changes, code, where, message):
    issues = errors(profile_issues(body_temperature(**changes), core_profile(BODYTEMP), core_profile, ucum_bodytemp))
    matching = [i for i in issues if i.expression == [where] and i.code == code and message in i.diagnostics]
    assert len(matching) == 1, issues
    assert {i.expression[0] for i in issues} <= {where, where.rsplit(".", 1)[0]}, issues  # nothing else
    assert matching[0].diagnostics.endswith(f"(from {BODYTEMP})") or "SimpleQuantity" in matching[0].diagnostics


def test_the_bodytemp_code_binding_is_extensible():
    vital_signs = {(LOINC, "8310-5"), (LOINC, "8867-4")}
    expand_all = lambda url: vital_signs if url.endswith("observation-vitalsignresult") else ucum_bodytemp(url)  # noqa: E731
    local = body_temperature(
        code={"coding": [{"system": LOINC, "code": "8310-5"}, {"system": "urn:example:local", "code": "t"}]}
    )
    assert profile_issues(local, core_profile(BODYTEMP), core_profile, expand_all) == []
    issues = profile_issues(
        body_temperature(code=pattern_code("8331-1")), core_profile(BODYTEMP), core_profile, expand_all
    )
    warning = [i for i in issues if i.severity == "warning"]
    assert [(i.code, i.expression) for i in warning] == [("code-invalid", ["Observation.code"])]


def blood_pressure_reading(systolic: float | None, diastolic: float | None) -> dict[str, Any]:
    def part(code: str, value: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"code": pattern_code(code)}
        if value is None:
            out["dataAbsentReason"] = {"text": "cuff slipped"}
        else:
            out["valueQuantity"] = {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
        return out

    return body_temperature(
        code=pattern_code("85354-9"),
        valueQuantity=None,
        component=[part("8480-6", systolic), part("8462-4", diastolic)],
    )


def test_the_core_blood_pressure_profile():
    bp = core_profile(f"{SD}bp")
    assert profile_issues(blood_pressure_reading(120, 80), bp, core_profile) == []
    assert profile_issues(blood_pressure_reading(120, None), bp, core_profile) == []
    only_diastolic = blood_pressure_reading(120, 80)
    only_diastolic["component"] = only_diastolic["component"][1:]
    issues = errors(profile_issues(only_diastolic, bp, core_profile))
    assert [(i.code, i.expression) for i in issues] == [("required", ["Observation.component"])] * 2
    assert "slice 'SystolicBP': minimum required = 1, but only found 0" in issues[1].diagnostics
    wrong_unit = blood_pressure_reading(120, 80)
    wrong_unit["component"][1]["valueQuantity"]["code"] = "kPa"
    issue = only(profile_issues(wrong_unit, bp, core_profile))
    assert (issue.code, issue.expression) == ("value", ["Observation.component[1].valueQuantity.code"])


def test_a_profile_is_not_changed_by_validation():
    before = copy.deepcopy(core_profile(BODYTEMP))
    profile_issues(body_temperature(valueQuantity=None), core_profile(BODYTEMP), core_profile)
    assert core_profile(BODYTEMP) == before


# The core profiles' data


def test_the_core_profiles_are_there_without_their_documentation():
    bodytemp = core_profile(f"{BODYTEMP}|4.0.1")
    assert bodytemp is not None and bodytemp["derivation"] == "constraint" and bodytemp["type"] == "Observation"
    assert "text" not in bodytemp and "mapping" not in bodytemp
    elements = bodytemp["snapshot"]["element"]
    assert not any(key in e for e in elements for key in ("definition", "comment", "short", "alias", "mapping"))
    assert any(e.get("fixedCode") == "8310-5" for e in elements)
    for name in ("vitalsigns", "bp", "heartrate", "SimpleQuantity", "MoneyQuantity", "bmi"):
        assert core_profile(f"{SD}{name}") is not None, name
    assert core_profile(f"{SD}Observation") is None  # a base type, not a profile
    assert core_profile("http://hl7.org/fhir/StructureDefinition/patient-birthPlace") is None  # an extension
    assert core_profile("https://example.org/nothing") is None


def test_the_core_profiles_file_is_what_the_generator_writes():
    from tests.foreign_ehr.harness import MODULES, require_node

    require_node("definitions")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import r4_data
    import r4_structures

    written = json.loads((r4_data.VALIDATION_DATA / "r4_profiles.json").read_text())
    assert written == r4_structures.profiles(r4_data.load(MODULES / "@medplum" / "definitions"))
    assert all(p["derivation"] == "constraint" and p["type"] != "Extension" for p in written.values())

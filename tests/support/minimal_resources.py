"""A minimal valid resource of any R4 type, generated from the R4 definitions the validator ships
(``fhir_server/validation/data/r4_types.json`` and ``r4_valuesets.json``, read here as plain data).

Every element with ``min >= 1`` is filled, recursively into backbone elements and datatypes: a code from its
required value set, the first allowed target of a Reference, the first type of a choice element.  A complex value
with no required child gets one harmless child, since R4 JSON has no empty objects.  The few types whose
invariants need more than their required elements (a StructureDefinition needs a differential, a
CapabilityStatement a rest...) are completed by ``_COMPLETIONS``; ``tests/api/test_capability_contract.py`` checks
every generated resource against the server, so a generator that falls short fails loudly.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson

_PRIMITIVES: dict[str, Any] = {
    "base64Binary": "aGVsbG8=",
    "boolean": True,
    "canonical": "http://example.org/fhir/StructureDefinition/x",
    "code": "x",
    "date": "2020-01-01",
    "dateTime": "2020-01-01",
    "decimal": 1,
    "id": "x1",
    "instant": "2020-01-01T00:00:00Z",
    "integer": 1,
    "markdown": "x",
    "oid": "urn:oid:1.2.3",
    "positiveInt": 1,
    "string": "x",
    "time": "10:00:00",
    "unsignedInt": 1,
    "uri": "http://example.org/x",
    "url": "http://example.org/x",
    "uuid": "urn:uuid:3c5b1a3e-7d2f-4b8e-9a61-0e2d4c6f8a10",
}
# Complex values with no required element: one child that no invariant or binding judges.
_SMALL: dict[str, Any] = {
    "Address": {"city": "x"},
    "Annotation": {"text": "x"},
    "Attachment": {"title": "x"},
    "CodeableConcept": {"text": "x"},
    "Coding": {"system": "http://example.org/codes", "code": "x"},
    "ContactDetail": {"name": "x"},
    "ContactPoint": {"system": "phone", "value": "1"},
    "Dosage": {"text": "x"},
    "Expression": {"language": "text/fhirpath", "expression": "true"},
    "HumanName": {"family": "x"},
    "Identifier": {"system": "http://example.org/ids", "value": "x"},
    "Meta": {"versionId": "1"},
    "Money": {"value": 1, "currency": "EUR"},
    "Period": {"start": "2020-01-01"},
    "Quantity": {"value": 1},
    "SimpleQuantity": {"value": 1},
    "Age": {"value": 1, "system": "http://unitsofmeasure.org", "code": "a"},
    "Duration": {"value": 1, "system": "http://unitsofmeasure.org", "code": "d"},
    "Distance": {"value": 1, "system": "http://unitsofmeasure.org", "code": "m"},
    "Count": {"value": 1, "system": "http://unitsofmeasure.org", "code": "1"},
    "MoneyQuantity": {"value": 1},
    "Range": {"low": {"value": 1}},
    "Ratio": {"numerator": {"value": 1}, "denominator": {"value": 1}},
    "Reference": {"display": "x"},
    "Timing": {"event": ["2020-01-01"]},
    "Narrative": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
}
# What some types' invariants or the server's own checks need beyond the required elements.
_PATIENT = {"reference": "Patient/seed"}
_COMPLETIONS: dict[str, dict[str, Any]] = {
    # A topic-based Subscription this server takes in: one of its topics, a rest-hook to loopback (never reached
    # while no notification worker runs), created as requested.
    "Subscription": {
        "status": "requested",
        "criteria": "http://fit-fhir.org/fhir/SubscriptionTopic/response-completed",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/notifications"},
    },
    "AllergyIntolerance": {
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
            ]
        }
    },
    "Appointment": {"participant": [{"actor": _PATIENT, "status": "accepted"}]},
    "AppointmentResponse": {"actor": _PATIENT},
    "Bundle": {"type": "collection"},
    "CapabilityStatement": {"kind": "capability", "software": {"name": "x"}, "rest": [{"mode": "server"}]},
    "Consent": {"policyRule": {"text": "x"}},
    "EventDefinition": {"trigger": [{"type": "named-event", "name": "x"}]},
    "ImmunizationRecommendation": {
        "recommendation": [{"forecastStatus": {"text": "x"}, "vaccineCode": [{"text": "x"}]}]
    },
    "InsurancePlan": {"name": "x"},
    "Linkage": {
        "item": [
            {"type": "source", "resource": _PATIENT},
            {"type": "alternate", "resource": {"reference": "Patient/b"}},
        ]
    },
    "Organization": {"name": "x"},
    "TerminologyCapabilities": {"kind": "capability", "software": {"name": "x"}},
    "CodeSystem": {"content": "not-present"},
    "Composition": {"section": [{"title": "x", "text": _SMALL["Narrative"]}]},
    "Group": {"actual": False},
    "ImplementationGuide": {"packageId": "example.x", "fhirVersion": ["4.0.1"]},
    "MessageDefinition": {"eventCoding": {"system": "http://example.org/events", "code": "x"}},
    "MessageHeader": {"eventCoding": {"system": "http://example.org/events", "code": "x"}},
    "NamingSystem": {"uniqueId": [{"type": "uri", "value": "http://example.org/ns"}]},
    "OperationDefinition": {"name": "X", "code": "x", "system": True},
    "Parameters": {"parameter": [{"name": "x", "valueString": "x"}]},
    "SearchParameter": {"base": ["Patient"], "expression": "Patient.name", "xpathUsage": "normal"},
    "StructureDefinition": {
        "kind": "resource",
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {"element": [{"id": "Patient", "path": "Patient"}]},
    },
    "StructureMap": {
        "group": [
            {
                "name": "x",
                "typeMode": "none",
                "input": [{"name": "x", "mode": "source"}],
                "rule": [{"name": "x", "source": [{"context": "x"}]}],
            }
        ]
    },
    "TestScript": {"name": "X"},
    "ValueSet": {"status": "draft"},
}


@cache
def _types() -> dict[str, Any]:
    data = resources.files("fhir_server.validation").joinpath("data/r4_types.json").read_bytes()
    return orjson.loads(data)["types"]


@cache
def _value_sets() -> dict[str, Any]:
    return orjson.loads(resources.files("fhir_server.validation").joinpath("data/r4_valuesets.json").read_bytes())


def minimal(resource_type: str, resource_id: str | None = None) -> dict[str, Any]:
    """A resource of the type that the server's validator accepts (see the module's docstring)."""
    resource: dict[str, Any] = {"resourceType": resource_type}
    if resource_id:
        resource["id"] = resource_id
    resource.update(_fill(resource_type, resource_type))
    for key, value in _COMPLETIONS.get(resource_type, {}).items():
        resource[key] = value
    return resource


def _fill(owner: str, path: str) -> dict[str, Any]:
    """The required children of the node at ``path`` in ``owner``'s snapshot."""
    out: dict[str, Any] = {}
    depth = path.count(".") + 1
    for element in _types()[owner]["elements"]:
        child = element["path"]
        if element["min"] < 1 or not child.startswith(path + ".") or child.count(".") != depth:
            continue
        name = child.rsplit(".", 1)[1]
        kind = element["type"][0]
        key = name.replace("[x]", kind["code"][0].upper() + kind["code"][1:]) if name.endswith("[x]") else name
        value = _value(owner, child, element, kind)
        out[key] = value if element["max"] == "1" else [value]
    return out


def _value(owner: str, path: str, element: dict[str, Any], kind: dict[str, Any]) -> Any:
    code = kind["code"]
    if code in ("BackboneElement", "Element"):
        return _fill(owner, path) or {"id": "x1"}
    if code == "Reference":
        targets = [t for t in kind.get("targets", ()) if t not in ("Resource",)]
        return {"reference": f"{targets[0]}/seed"} if targets else {"display": "x"}
    binding = element.get("binding")
    if binding and binding["strength"] == "required":
        codes = _value_sets().get(binding["valueSet"], {}).get("codes") or []
        if codes:
            system, value = codes[0]
            if code == "code":
                return value
            if code == "Coding":
                return {"system": system, "code": value}
            if code == "CodeableConcept":
                return {"coding": [{"system": system, "code": value}]}
    if code in _PRIMITIVES:
        return _PRIMITIVES[code]
    info = _types().get(code)
    filled = _fill(code, code) if info else {}
    return {**_SMALL.get(code, {}), **filled} or {"id": "x1"}

"""Examples of the R4 invariants: ``(key, passing_resource, failing_resource)``, two complete resources that differ
only in what the invariant judges.  Every invariant whose context is an element of QuestionnaireResponse,
Observation, Flag, Provenance, AuditEvent, Task or MeasureReport (ele-1 and txt-* left to the structure walk) and
the invariants of the datatypes those use (per-1, qty-3, sqty-1, ref-1, att-1, rat-1, rng-2), several where the
JSON shapes differ (nested items, extensions at different depths, time zones).  Written for these tests."""

from __future__ import annotations

from typing import Any

DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Generated</p></div>'
TEXT = {"status": "generated", "div": DIV}
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
NOTE = "http://example.org/fhir/StructureDefinition/note"
SOURCE = "http://example.org/fhir/StructureDefinition/source"
PATIENT = {"resourceType": "Patient", "id": "p", "name": [{"family": "Doe"}]}
QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "id": "q",
    "status": "active",
    "item": [
        {"linkId": "1", "type": "integer"},
        {"linkId": "2", "type": "decimal"},
        {"linkId": "3", "type": "integer"},
        {"linkId": "4", "type": "choice"},
    ],
}
ANSWERS = [
    {"linkId": "1", "text": "Individually", "answer": [{"valueInteger": 7}]},
    {"linkId": "2", "text": "Interpersonally", "answer": [{"valueDecimal": 6.4}]},
    {"linkId": "3", "text": "Socially", "answer": [{"valueInteger": 8}]},
    {
        "linkId": "4",
        "text": "Overall",
        "answer": [{"valueCoding": {"system": "http://example.org/cs", "code": "good"}}],
    },
]

QR: dict[str, Any] = {
    "resourceType": "QuestionnaireResponse",
    "id": "qr1",
    "text": TEXT,
    "questionnaire": "http://example.org/Questionnaire/ors",
    "status": "completed",
    "subject": {"reference": "Patient/p1"},
    "authored": "2024-03-01T10:00:00Z",
    "author": {"reference": "Practitioner/pr1"},
    "item": ANSWERS,
}
OBS_CORE: dict[str, Any] = {  # an Observation without effective[x] and value[x]
    "resourceType": "Observation",
    "id": "o1",
    "text": TEXT,
    "status": "final",
    # not a vital sign: R4 would hold a body weight to the bodyweight profile as well
    "code": {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose [Mass/volume] in Blood"}]},
    "subject": {"reference": "Patient/p1"},
}
OBS_WHEN = {**OBS_CORE, "effectiveDateTime": "2024-03-01T10:00:00Z"}
OBSERVATION = {**OBS_WHEN, "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"}}
BP_CODE = {"coding": [{"system": LOINC, "code": "55284-4"}]}  # not 85354-9, which brings the bp profile
SYSTOLIC = {"coding": [{"system": LOINC, "code": "8480-6"}]}
FLAG: dict[str, Any] = {
    "resourceType": "Flag",
    "id": "f1",
    "text": TEXT,
    "status": "active",
    "code": {"text": "Risk of self-harm"},
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2024-03-01", "end": "2024-06-01"},
}
PROVENANCE: dict[str, Any] = {
    "resourceType": "Provenance",
    "id": "pv1",
    "text": TEXT,
    "target": [{"reference": "QuestionnaireResponse/qr1"}],
    "recorded": "2024-03-01T10:00:00Z",
    "agent": [{"who": {"reference": "Practitioner/pr1"}}],
}
AUDIT_EVENT: dict[str, Any] = {
    "resourceType": "AuditEvent",
    "id": "ae1",
    "text": TEXT,
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "action": "R",
    "recorded": "2024-03-01T10:00:00Z",
    "outcome": "0",
    "agent": [{"who": {"reference": "Practitioner/pr1"}, "requestor": True}],
    "source": {"observer": {"display": "FHIR server"}},
    "entity": [{"what": {"reference": "Patient/p1"}, "name": "Patient record"}],
}
TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "t1",
    "text": TEXT,
    "status": "requested",
    "intent": "order",
    "for": {"reference": "Patient/p1"},
    "authoredOn": "2024-03-01T10:00:00Z",
    "lastModified": "2024-03-02T09:00:00Z",
}
MEASURE_REPORT: dict[str, Any] = {
    "resourceType": "MeasureReport",
    "id": "mr1",
    "text": TEXT,
    "status": "complete",
    "type": "summary",
    "measure": "http://example.org/Measure/ors",
    "period": {"start": "2024-01-01", "end": "2024-03-31"},
    "group": [{"population": [{"code": {"text": "initial-population"}, "count": 12}]}],
}
BASIC = {"resourceType": "Basic", "id": "b", "code": {"text": "x"}}
BACK = {**BASIC, "subject": {"reference": "#"}}  # refers to its container
RESTRICTED = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
STRATUM = {"value": {"text": "female"}, "population": [{"code": {"text": "initial-population"}, "count": 7}]}
COMPONENT = {"code": {"text": "age"}, "value": {"text": "18-30"}}


def _ext(value: dict[str, Any], nested: bool = False) -> list[dict[str, Any]]:
    """One extension with ``value``; ``nested``: also with a nested extension (what ext-1 forbids)."""
    extension = {"url": NOTE, **value}
    if nested:
        extension["extension"] = [{"url": SOURCE, "valueString": "clinician"}]
    return [extension]


EXAMPLES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # dom-2: a contained resource contains nothing (the nested Basic refers to its container, so dom-3 holds).
    (
        "dom-2",
        {**QR, "contained": [PATIENT], "subject": {"reference": "#p"}},
        {**QR, "contained": [{**PATIENT, "contained": [BACK]}], "subject": {"reference": "#p"}},
    ),
    # dom-3: a contained resource is referenced (a Reference, a canonical) or refers to its container.
    ("dom-3", {**QR, "contained": [PATIENT], "subject": {"reference": "#p"}}, {**QR, "contained": [PATIENT]}),
    ("dom-3", {**QR, "contained": [QUESTIONNAIRE], "questionnaire": "#q"}, {**QR, "contained": [QUESTIONNAIRE]}),
    (
        "dom-3",
        {**FLAG, "contained": [BACK]},
        {**FLAG, "contained": [BASIC]},
    ),
    (
        "dom-3",
        {**PROVENANCE, "contained": [PATIENT], "target": [{"reference": "#p"}]},
        {**PROVENANCE, "contained": [PATIENT], "entity": [{"role": "source", "what": {"display": "#p"}}]},
    ),
    # dom-4: contained resources have no versionId or lastUpdated.
    (
        "dom-4",
        {**OBSERVATION, "contained": [PATIENT], "subject": {"reference": "#p"}},
        {**OBSERVATION, "contained": [{**PATIENT, "meta": {"versionId": "2"}}], "subject": {"reference": "#p"}},
    ),
    (
        "dom-4",
        {**TASK, "contained": [{**PATIENT, "meta": {"source": "http://example.org"}}], "for": {"reference": "#p"}},
        {
            **TASK,
            "contained": [{**PATIENT, "meta": {"lastUpdated": "2024-03-01T10:00:00Z"}}],
            "for": {"reference": "#p"},
        },
    ),
    # dom-5: contained resources have no security labels.
    (
        "dom-5",
        {**AUDIT_EVENT, "contained": [PATIENT], "entity": [{"what": {"reference": "#p"}}]},
        {**AUDIT_EVENT, "contained": [{**PATIENT, "meta": RESTRICTED}], "entity": [{"what": {"reference": "#p"}}]},
    ),
    # dom-6 (warning): a narrative.
    ("dom-6", MEASURE_REPORT, {key: value for key, value in MEASURE_REPORT.items() if key != "text"}),
    ("dom-6", FLAG, {key: value for key, value in FLAG.items() if key != "text"}),
    # ext-1: an extension has a value or extensions, not both (and not neither), wherever it is.
    ("ext-1", {**QR, "extension": _ext({"valueString": "a"})}, {**QR, "extension": _ext({"valueString": "a"}, True)}),
    (
        "ext-1",
        {**QR, "item": [{**ANSWERS[0], "answer": [{"valueInteger": 7, "extension": _ext({"valueBoolean": False})}]}]},
        {**QR, "item": [{**ANSWERS[0], "answer": [{"valueInteger": 7, "extension": [{"url": NOTE}]}]}]},
    ),
    (
        "ext-1",
        {
            **QR,
            "item": [
                {**ANSWERS[1], "modifierExtension": [{"url": NOTE, "extension": [{"url": SOURCE, "valueCode": "x"}]}]}
            ],
        },
        {**QR, "item": [{**ANSWERS[1], "modifierExtension": _ext({"valueCode": "x"}, True)}]},
    ),
    (
        "ext-1",
        {**OBSERVATION, "extension": _ext({"valueReference": {"reference": "Patient/p2"}})},
        {**OBSERVATION, "extension": _ext({"valueReference": {"reference": "Patient/p2"}}, True)},
    ),
    (
        "ext-1",
        {**FLAG, "extension": _ext({"valueCode": "high"})},
        {**FLAG, "extension": _ext({"valueCode": "high"}, True)},
    ),
    (
        "ext-1",
        {**PROVENANCE, "agent": [{**PROVENANCE["agent"][0], "extension": _ext({"valueDateTime": "2024-03-01"})}]},
        {**PROVENANCE, "agent": [{**PROVENANCE["agent"][0], "extension": _ext({"valueDateTime": "2024-03-01"}, True)}]},
    ),
    (
        "ext-1",
        {
            **AUDIT_EVENT,
            "entity": [
                {
                    **AUDIT_EVENT["entity"][0],
                    "detail": [{"type": "note", "valueString": "x", "extension": _ext({"valueInteger": 1})}],
                }
            ],
        },
        {
            **AUDIT_EVENT,
            "entity": [
                {
                    **AUDIT_EVENT["entity"][0],
                    "detail": [{"type": "note", "valueString": "x", "extension": [{"url": NOTE}]}],
                }
            ],
        },
    ),
    (
        "ext-1",
        {**TASK, "input": [{"type": {"text": "score"}, "valueInteger": 3, "extension": _ext({"valueUri": "urn:x"})}]},
        {
            **TASK,
            "input": [{"type": {"text": "score"}, "valueInteger": 3, "extension": _ext({"valueUri": "urn:x"}, True)}],
        },
    ),
    (
        "ext-1",
        {**MEASURE_REPORT, "group": [{**MEASURE_REPORT["group"][0], "extension": _ext({"valueDecimal": 0.5})}]},
        {**MEASURE_REPORT, "group": [{**MEASURE_REPORT["group"][0], "extension": _ext({"valueDecimal": 0.5}, True)}]},
    ),
    # qrs-1: nested items go under the answer or the item, not both; also deep in the tree.
    (
        "qrs-1",
        {**QR, "item": [{"linkId": "g", "answer": [{"valueBoolean": True, "item": [ANSWERS[0]]}]}]},
        {**QR, "item": [{"linkId": "g", "answer": [{"valueBoolean": True}], "item": [ANSWERS[0]]}]},
    ),
    (
        "qrs-1",
        {**QR, "item": [{"linkId": "g", "item": [{"linkId": "g1", "item": [ANSWERS[2]]}]}]},
        {
            **QR,
            "item": [
                {"linkId": "g", "item": [{"linkId": "g1", "answer": [{"valueInteger": 1}], "item": [ANSWERS[2]]}]}
            ],
        },
    ),
    # obs-3: a reference range has low, high or text (also a component's).
    (
        "obs-3",
        {**OBSERVATION, "referenceRange": [{"low": {"value": 50, "unit": "kg", "system": UCUM, "code": "kg"}}]},
        {**OBSERVATION, "referenceRange": [{"appliesTo": [{"text": "adults"}]}]},
    ),
    (
        "obs-3",
        {
            **OBS_WHEN,
            "code": BP_CODE,
            "component": [
                {"code": SYSTOLIC, "valueQuantity": {"value": 120}, "referenceRange": [{"text": "below 140"}]}
            ],
        },
        {
            **OBS_WHEN,
            "code": BP_CODE,
            "component": [
                {"code": SYSTOLIC, "valueQuantity": {"value": 120}, "referenceRange": [{"age": {"low": {"value": 18}}}]}
            ],
        },
    ),
    # obs-6: a value or a dataAbsentReason, not both.
    (
        "obs-6",
        {**OBS_WHEN, "dataAbsentReason": {"text": "Not asked"}},
        {**OBSERVATION, "dataAbsentReason": {"text": "Not asked"}},
    ),
    # obs-7: with a value, no component has the Observation's own code.
    (
        "obs-7",
        {**OBSERVATION, "component": [{"code": SYSTOLIC, "valueQuantity": {"value": 120}}]},
        {
            **OBSERVATION,
            "component": [{"code": {"coding": [OBSERVATION["code"]["coding"][0]]}, "valueQuantity": {"value": 1}}],
        },
    ),
    # sev-1: an entity has a name or a query, not both.
    (
        "sev-1",
        AUDIT_EVENT,
        {**AUDIT_EVENT, "entity": [{**AUDIT_EVENT["entity"][0], "query": "X2NvdW50PTEw"}]},
    ),
    # inv-1@Task: lastModified is not before authoredOn (compared as instants: time zones count).
    ("inv-1@Task", TASK, {**TASK, "lastModified": "2024-02-29T23:00:00Z"}),
    (
        "inv-1@Task",
        {**TASK, "authoredOn": "2024-03-01T10:00:00+02:00", "lastModified": "2024-03-01T09:00:00Z"},
        {**TASK, "authoredOn": "2024-03-01T10:00:00-02:00", "lastModified": "2024-03-01T11:00:00Z"},
    ),
    # mrp-1: a data-collection report has no groups.
    ("mrp-1", MEASURE_REPORT, {**MEASURE_REPORT, "type": "data-collection"}),
    # mrp-2: each stratum has a value or components, not both.
    (
        "mrp-2",
        {**MEASURE_REPORT, "group": [{"stratifier": [{"stratum": [STRATUM, {"component": [COMPONENT]}]}]}]},
        {**MEASURE_REPORT, "group": [{"stratifier": [{"stratum": [STRATUM, {**STRATUM, "component": [COMPONENT]}]}]}]},
    ),
    # per-1 (Period): start is not after end; a date and a dateTime of that day have no known order (not satisfied).
    ("per-1", FLAG, {**FLAG, "period": {"start": "2024-06-02", "end": "2024-06-01"}}),
    (
        "per-1",
        {**TASK, "executionPeriod": {"start": "2024-03-01T23:30:00-05:00", "end": "2024-03-02T04:45:00Z"}},
        {**TASK, "executionPeriod": {"start": "2024-03-01T23:30:00-05:00", "end": "2024-03-02T04:15:00Z"}},
    ),
    (
        "per-1",
        {
            **OBS_CORE,
            "valueQuantity": OBSERVATION["valueQuantity"],
            "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-02T08:00:00Z"},
        },
        {
            **OBS_CORE,
            "valueQuantity": OBSERVATION["valueQuantity"],
            "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-01T08:00:00Z"},
        },
    ),
    (
        "per-1",
        {**PROVENANCE, "occurredPeriod": {"start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:00:00.250Z"}},
        {**PROVENANCE, "occurredPeriod": {"start": "2024-03-01T10:00:00.500Z", "end": "2024-03-01T10:00:00Z"}},
    ),
    # qty-3 (Quantity): a code has a system.
    ("qty-3", OBSERVATION, {**OBSERVATION, "valueQuantity": {"value": 72.5, "unit": "kg", "code": "kg"}}),
    # sqty-1 (SimpleQuantity, a reference range's low and high): no comparator.
    (
        "sqty-1",
        {**OBSERVATION, "referenceRange": [{"high": {"value": 90, "system": UCUM, "code": "kg"}}]},
        {**OBSERVATION, "referenceRange": [{"high": {"value": 90, "comparator": "<", "system": UCUM, "code": "kg"}}]},
    ),
    # ref-1 (Reference): a local reference names a contained resource ('#' alone is the container).
    (
        "ref-1",
        {**PROVENANCE, "contained": [PATIENT], "target": [{"reference": "#p"}]},
        {**PROVENANCE, "contained": [PATIENT], "target": [{"reference": "#p"}, {"reference": "#other"}]},
    ),
    (
        "ref-1",
        {**QR, "author": {"reference": "Practitioner/pr1"}},
        {**QR, "author": {"reference": "#pr1"}},
    ),
    # att-1 (Attachment): inline data has a contentType.
    (
        "att-1",
        {
            **QR,
            "item": [{"linkId": "5", "answer": [{"valueAttachment": {"contentType": "text/plain", "data": "aGk="}}]}],
        },
        {**QR, "item": [{"linkId": "5", "answer": [{"valueAttachment": {"data": "aGk="}}]}]},
    ),
    # rat-1 (Ratio): numerator and denominator both or neither.
    (
        "rat-1",
        {**OBS_WHEN, "valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 4}}},
        {**OBS_WHEN, "valueRatio": {"numerator": {"value": 1}}},
    ),
    # rng-2 (Range): low is not above high (same unit).
    (
        "rng-2",
        {
            **OBS_WHEN,
            "valueRange": {
                "low": {"value": 5, "system": UCUM, "code": "mg"},
                "high": {"value": 9, "system": UCUM, "code": "mg"},
            },
        },
        {
            **OBS_WHEN,
            "valueRange": {
                "low": {"value": 9, "system": UCUM, "code": "mg"},
                "high": {"value": 5, "system": UCUM, "code": "mg"},
            },
        },
    ),
]

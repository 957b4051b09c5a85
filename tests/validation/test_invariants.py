"""The FHIRPath invariants engine (fhir_server/validation/invariants.py): the examples, the native fast paths
against fhirpathpy, and every expression of the R4 tables compiled and evaluated."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cache
from typing import Any, NamedTuple

import fhirpathpy
import pytest
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_server.validation import definitions, invariants
from fhir_server.validation.invariant_natives import FAST, NATIVE, compare_datetimes
from tests.validation.invariant_examples import DIV, EXAMPLES, OBSERVATION, QR

TYPES = definitions._data()["types"]
RESOURCES = ("QuestionnaireResponse", "Observation", "Flag", "Provenance", "AuditEvent", "Task", "MeasureReport")
# What fhirpathpy cannot evaluate as published, and what is done instead.
UNEVALUABLE = {
    "txt-1": "htmlChecks(): the narrative's XHTML, checked by the walk (narrative.py); holds() is True",
    "txt-2": "htmlChecks(): as txt-1",
    "ctm-1": "resolve(): native (contained resources, or the type a literal reference names)",
    "rng-2": "fhirpathpy cannot compare Quantities: native (same unit; other units need UCUM: None)",
}
NOT_EVALUATED = {  # fhirpathpy could, but these are judged elsewhere
    "ele-1": "the structure walk enforces it natively (no empty objects or values); holds() is True",
    "opd-3": "HL7's R4 correction adds memberOf(resource-types): native, from the R4 type list",
}
LATE = "2024-03-01T11:00:00Z"  # an hour before 10:00-02:00 (12:00Z), after it as a string
REWRITTEN = {  # evaluated right only as invariants.expression() rewrites them: (node, right answer)
    "dom-3": ({**QR, "contained": [{"resourceType": "Basic", "id": "b"}], "author": {"reference": "#b"}}, True),
    "per-1": ({"start": "2024-03-01T10:00:00-02:00", "end": LATE}, False),
    "inv-1@Task": ({"authoredOn": "2024-03-01T10:00:00-02:00", "lastModified": LATE}, False),
    "mdd-1": ({"whenPrepared": "2024-03-01T10:00:00-02:00", "whenHandedOver": LATE}, False),
}


class Context(NamedTuple):
    key: str
    node: Any
    resource: dict[str, Any]
    root: dict[str, Any]


@cache
def _elements(owner: str) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in TYPES[owner]["elements"] if "sliceName" not in e}


def _child(owner: str, path: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The element of JSON ``key`` under ``path`` and the type that key stands for."""
    elements = _elements(owner)
    if f"{path}.{key}" in elements:
        element = elements[f"{path}.{key}"]
        return element, (element.get("type") or [{"code": "BackboneElement"}])[0]["code"]
    for entry_path, element in elements.items():
        stem = entry_path.removeprefix(path + ".").removesuffix("[x]")
        if entry_path.endswith("[x]") and entry_path.startswith(path + ".") and key.startswith(stem):
            for entry in element["type"]:
                if key == stem + entry["code"][0].upper() + entry["code"][1:]:
                    return element, entry["code"]
    return None


def contexts(resource: dict[str, Any], root: dict[str, Any] | None = None) -> Iterator[Context]:
    """Every (invariant, context node) of ``resource``, nested resources included: the element's own keys, those of
    the element a contentReference names, of its datatype's root and of the type profiles (SimpleQuantity)."""
    root = root if root is not None else resource
    kind = resource["resourceType"]
    for key in _elements(kind)[kind].get("constraint", ()):
        yield Context(key, resource, resource, root)
    yield from _walk(resource, kind, kind, resource, root)


def _walk(node: dict[str, Any], owner: str, path: str, resource: dict[str, Any], root: dict[str, Any]):
    for key, value in node.items():
        found = _child(owner, path, key) if key != "resourceType" and not key.startswith("_") else None
        if found is None:
            continue
        element, code = found
        target = _elements(owner).get(element.get("contentReference", ""), element)
        for item in value if isinstance(value, list) else [value]:
            keys = [*element.get("constraint", ()), *(target.get("constraint", ()) if target is not element else ())]
            if code == "Resource" or TYPES.get(code, {}).get("kind") == "resource":
                yield from contexts(item, root)
                continue
            if "contentReference" in element or code in ("BackboneElement", "Element"):
                yield from _walk(item, owner, target["path"], resource, root)
            elif TYPES.get(code, {}).get("kind") == "complex-type":
                profiles = [p.rsplit("/", 1)[-1] for e in element.get("type", ()) for p in e.get("profile", ())]
                for name in (code, *profiles):
                    keys += [k for k in _elements(name)[TYPES[name]["type"]].get("constraint", ()) if k not in keys]
                yield from _walk(item, code, code, resource, root)
            yield from (Context(k, item, resource, root) for k in dict.fromkeys(keys))


def _judged(resource: dict[str, Any]) -> list[tuple[Context, bool | None]]:
    return [(c, invariants.holds(*c)) for c in contexts(resource) if c.key not in invariants.WALKER]


def test_the_examples_cover_every_invariant_of_the_resources():
    wanted = {
        key
        for name in RESOURCES
        for element in TYPES[name]["elements"]
        for key in element.get("constraint", ())
        if key not in invariants.WALKER
    }
    given = {key for key, _, _ in EXAMPLES}
    assert wanted - given == set()
    assert {"per-1", "qty-3", "sqty-1", "ref-1", "att-1", "rat-1", "rng-2"} <= given


@pytest.mark.parametrize(("key", "passing", "failing"), EXAMPLES, ids=[key for key, _, _ in EXAMPLES])
def test_example(key: str, passing: dict[str, Any], failing: dict[str, Any]):
    good, bad = _judged(passing), _judged(failing)
    assert [held for c, held in good if c.key == key], f"no {key} context in the passing example"
    assert [(c.key, held) for c, held in good if held is not True] == []  # the key and every other invariant hold
    assert {(c.key, held) for c, held in bad if held is not True} == {(key, False)}  # only the key fails


def _agreement_cases() -> list[tuple[str, Context]]:
    cases = [(c.key, c) for _, *pair in EXAMPLES for resource in pair for c in contexts(resource) if c.key in FAST]
    return cases + [(c.key, c) for c in EDGES]


EXT, OBS = "http://example.org/x", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
WEIGHT, LOINC_1 = OBSERVATION["code"]["coding"][0], {"system": "http://loinc.org", "code": "1-8"}
EDGES = [  # JSON shapes the examples do not have
    Context("ext-1", {"url": EXT, "_valueString": {"extension": [{"url": EXT, "valueCode": "a"}]}}, QR, QR),
    Context("ext-1", {"url": EXT, "extension": []}, QR, QR),
    Context("ext-1", {"url": EXT, "valueBoolean": False}, QR, QR),
    Context("ref-1", {"reference": "#"}, QR, QR),
    Context("ref-1", {"display": "no reference"}, QR, QR),
    Context("per-1", {"start": "2024-01-02", "_start": {"extension": [{"url": EXT, "valueCode": "a"}]}}, QR, QR),
    Context("per-1", {"_start": {"extension": [{"url": EXT, "valueCode": "a"}]}, "end": "2024-01-01"}, QR, QR),
    Context("per-1", {"start": "2024", "end": "2024-01-01"}, QR, QR),
    Context("per-1", {"start": "2024-01-01T00:30:00+01:00", "end": "2024-01-01"}, QR, QR),
    Context("qty-3", {"value": 1, "_code": {"extension": [{"url": EXT, "valueCode": "a"}]}}, QR, QR),
    Context("dom-6", {**OBS, "text": {"status": "generated", "div": DIV}}, OBS, {**QR, "contained": [OBS]}),
    Context("dom-6", OBS, OBS, {**QR, "contained": [OBS]}),
    Context("obs-6", {**OBS, "_valueString": {"extension": []}, "dataAbsentReason": {"text": "x"}}, OBS, OBS),
    Context("obs-7", {**OBS, "valueString": "a", "component": [{"code": {"text": "x"}}]}, OBS, OBS),
    Context("obs-7", {**OBSERVATION, "component": [{"code": {"coding": [LOINC_1, WEIGHT]}}]}, OBSERVATION, OBSERVATION),
    Context("rat-1", {"id": "r"}, OBS, OBS),
    Context("rat-1", {"extension": [{"url": EXT, "valueCode": "unknown"}]}, OBS, OBS),
    Context("mrp-1", {"resourceType": "MeasureReport", "group": [{"id": "g"}]}, QR, QR),
    Context("inv-1@Task", {"authoredOn": "2024-01-01", "lastModified": "2024-01-01T10:00:00Z"}, QR, QR),
    Context("dom-3", {**QR, "contained": [{"resourceType": "Basic", "code": {"text": "no id"}}]}, QR, QR),
    Context("dom-3", {**QR, "contained": [{"resourceType": "Basic", "id": "b"}], "meta": {"profile": ["#b"]}}, QR, QR),
    Context("dom-3", {**QR, "contained": [{"resourceType": "Basic", "id": "b"}], "item": [{"linkId": "#b"}]}, QR, QR),
]


def test_every_fast_path_agrees_with_fhirpathpy():
    seen: dict[str, set[bool]] = {key: set() for key in FAST}
    for key, (_, node, resource, root) in _agreement_cases():
        reference = invariants.compiled(invariants.expression(key), invariants.context_type(key), key)
        expected = reference(node, resource, root)
        assert expected is not None, (key, node)
        assert FAST[key](node, resource, root) is expected, (key, node)
        seen[key].add(expected)
    assert {key: answers for key, answers in seen.items() if answers != {True, False}} == {}


def _sample(code: str, depth: int = 0) -> Any:
    """A value of type ``code`` with every child element present (datatypes two levels deep)."""
    primitive = {"boolean": True, "integer": 1, "positiveInt": 1, "unsignedInt": 0, "decimal": 1.5}
    dated = {"date": "2024-01-01", "dateTime": "2024-01-01T00:00:00Z", "instant": "2024-01-01T00:00:00Z"}
    if code in primitive or code in dated:
        return primitive.get(code, dated.get(code))
    info = TYPES.get(code)
    if info is None or info["kind"] == "primitive-type":
        return {"time": "10:00:00", "xhtml": DIV, "base64Binary": "aGk=", "uri": "http://example.org/x"}.get(code, "x")
    if code in ("Extension", "Reference") or (info["kind"] == "resource" and depth):
        return {"Extension": {"url": EXT, "valueString": "x"}, "Reference": {"reference": "Patient/1"}}.get(code)
    return _fill(code, info["type"], depth) if depth < 2 else {"id": "x"}


def _fill(owner: str, path: str, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"resourceType": owner} if TYPES[owner]["kind"] == "resource" else {}
    for element_path, element in _elements(owner).items():
        name = element_path.removeprefix(path + ".")
        if element_path == name or "." in name or name in ("extension", "modifierExtension", "contained"):
            continue
        code = (element.get("type") or [{"code": "BackboneElement"}])[0]["code"]
        key = name.removesuffix("[x]") + (code[0].upper() + code[1:] if name.endswith("[x]") else "")
        if "contentReference" in element:
            continue
        if code in ("BackboneElement", "Element"):
            node[key] = _fill(owner, element_path, depth + 1) if depth < 2 else {"id": "x"}
        else:
            node[key] = _sample(code, depth + 1)
    return node


def _evaluations(key: str) -> list[bool | None]:
    """fhirpathpy on an empty and on a filled node of ``key``'s context."""
    kind = invariants.context_type(key)
    owner = kind.split(".")[0]
    full = _sample(kind) if "." not in kind else _fill(owner, kind, 1)
    empty = {"resourceType": owner} if TYPES[owner]["kind"] == "resource" else {} if isinstance(full, dict) else "1"
    evaluate = invariants.compiled(invariants.expression(key), kind, key)
    return [evaluate(node, node if "resourceType" in node else {"resourceType": "Basic"}) for node in (empty, full)]


def test_every_expression_compiles_and_evaluates_except_the_documented():
    failed = {key for key in definitions.constraint_table() if None in _evaluations(key)}
    assert failed == set(UNEVALUABLE)
    assert all("trace(" not in invariants.expression(key) for key in definitions.constraint_table())


def _published(key: str, node: Any, resource: dict[str, Any]) -> bool | None:
    """fhirpathpy on the expression as published (no correction), with hasValue() and the context typed."""
    text = invariants._untraced(invariants.constraint(key).expression)
    function = fhirpathpy.compile(text, models["r4"], invariants._OPTIONS)
    try:
        result = function(ResourceNode.create_node(node, invariants.context_type(key)), {"resource": resource})
    except Exception:
        return None
    return invariants._truth(result)


@pytest.mark.parametrize("key", REWRITTEN)
def test_rewritten_expressions(key: str):
    node, right = REWRITTEN[key]
    resource = node if "resourceType" in node else QR
    assert _published(key, node, resource) is not right  # None (an error) or the wrong answer
    assert invariants.compiled(invariants.expression(key), invariants.context_type(key), key)(node, resource) is right
    assert invariants.holds(key, node, resource) is right


def test_fhirpathpy_compares_datetimes_as_strings_unless_rewritten():
    node = {"start": "2024-03-01T23:30:00-05:00", "end": "2024-03-02T04:15:00Z"}  # ends 15 minutes before it starts
    published = invariants.compiled("start <= end", "Period")
    assert published(node, QR) is True  # what fhirpathpy says of the published per-1's comparison: wrong
    assert invariants.holds("per-1", node, QR) is False
    assert compare_datetimes("2024-01-01", "2024-01-01T10:00:00Z") is None  # order unknown: per-1 fails
    assert invariants.holds("per-1", {"start": "2024-01-01", "end": "2024-01-01T10:00:00Z"}, QR) is False


def test_natives():
    care = {"resourceType": "CareTeam", "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert invariants.holds("ctm-1", {"member": {"reference": "Practitioner/1"}, "onBehalfOf": {}}, care) is True
    assert invariants.holds("ctm-1", {"member": {"reference": "#p"}, "onBehalfOf": {"display": "x"}}, care) is False
    assert (
        invariants.holds("ctm-1", {"member": {"reference": "Patient/2"}, "onBehalfOf": {"display": "x"}}, care) is False
    )
    assert invariants.holds("ctm-1", {"member": {"identifier": {"value": "1"}}, "onBehalfOf": {"display": "x"}}, care)
    assert invariants.holds("opd-3", {"type": "Patient", "targetProfile": ["http://x"]}, care) is True
    assert invariants.holds("opd-3", {"type": "string", "targetProfile": ["http://x"]}, care) is False
    grams = {"low": {"value": 1, "system": "http://unitsofmeasure.org", "code": "g"}}
    assert invariants.holds("rng-2", {**grams, "high": {"value": 500, "code": "mg"}}, care) is None  # needs UCUM
    assert set(NATIVE) <= {*UNEVALUABLE, *NOT_EVALUATED}


def test_walker_invariants_hold_and_unknown_keys_are_logged_once(caplog: pytest.LogCaptureFixture):
    assert invariants.holds("ele-1", {}, QR) is True
    assert invariants.holds("txt-1", "<p>", QR) is True
    with caplog.at_level(logging.WARNING, logger="fhir_server.validation"):
        assert invariants.holds("xyz-9", {}, QR) is None
        assert invariants.holds("xyz-9", {}, QR) is None
    assert len([r for r in caplog.records if "xyz-9" in r.getMessage()]) == 1


def test_malformed_data_never_raises():
    for key in (*FAST, *NATIVE):
        for node in ({"extension": "x", "contained": [1], "reference": 5, "low": [], "start": {}}, "text", 3, []):
            assert invariants.holds(key, node, QR) in (True, False, None)


def test_a_questionnaire_response_needs_no_fhirpathpy():
    """Every invariant a response brings has a fast path (its speed is bench/validate.py's to measure)."""
    answers = [{"valueInteger": 3}, {"valueDecimal": 2.5}, {"valueCoding": {"system": "http://x", "code": "a"}}]
    response = {
        **QR,
        "extension": [{"url": EXT, "valueString": "paper"}],
        "item": [{"linkId": str(i), "text": f"Question {i}", "answer": [answers[i % 3]]} for i in range(8)],
    }
    judged = [c for c in contexts(response) if c.key not in invariants.WALKER]
    assert {c.key for c in judged} <= set(FAST)
    assert all(invariants.holds(*c) is True for c in judged)

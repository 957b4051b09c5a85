"""The local-reference rules (local_refs.py) are fed by the structure walk (structure.py) during ``check``, and run
their own walk over ``local_refs.nodes()`` only when that walk left the typed one (``Walk.refs`` dropped).  Both
feeds must give the same issues, in the same order: on the rule cases of test_bundle_rules, on the shipped
examples, and on seeded random changes that give the rules work (ids, "#" references, contained resources, a
primitive's extensions) or make the resource malformed."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from fhir_server import fhirjson
from fhir_server.config import PROJECT_ROOT
from fhir_server.validation import definitions
from fhir_server.validation.local_refs import LocalRefs, local_ref_issues
from fhir_server.validation.resource import check
from fhir_server.validation.structure import MAX_ISSUES, Walk, walk_resource
from tests.validation import invariant_examples
from tests.validation.test_bundle_rules import LOCAL_CASES, patient

Shown = list[tuple[str, str, list[str]]]


def shown(issues: list[Any]) -> Shown:
    return [(issue.code, issue.diagnostics, issue.expression) for issue in issues]


def fed_by_walk(resource: dict[str, Any]) -> Shown | None:
    """The issues the structure walk's feed gives, or None when the walk dropped it (check then asks nodes())."""
    walk = Walk(refs=LocalRefs())
    walk_resource(resource, resource["resourceType"], walk)
    return None if walk.refs is None else shown(walk.refs.issues)


def walked_alone(resource: dict[str, Any]) -> Shown:
    return shown(local_ref_issues(resource, resource["resourceType"]))


def _examples() -> list[dict[str, Any]]:
    found = [
        fhirjson.loads_stored(path.read_bytes())["response"]
        for path in sorted((PROJECT_ROOT / "questionnaires").glob("*/examples/*.json"))
    ]
    for value in vars(invariant_examples).values():
        for case in value if isinstance(value, list) else ():
            found += [r for r in case if isinstance(r, dict) and "resourceType" in r] if isinstance(case, tuple) else []
    return found + [case[1] for case in LOCAL_CASES]


EXAMPLES = _examples()


@pytest.mark.parametrize("resource", [c[1] for c in LOCAL_CASES], ids=[c[0] for c in LOCAL_CASES])
def test_the_walk_feeds_the_rules_what_their_own_walk_finds(resource: dict[str, Any]) -> None:
    walked = fed_by_walk(resource)  # None where the case has errors of structure (an id-only element, a bad id)
    assert walked is None or walked == walked_alone(resource)
    in_check = [issue for issue in check(resource).issues if issue.rule == "reference"]
    assert shown(in_check) == walked_alone(resource)


QUALIFIER = [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "BR"}]


def test_a_primitive_s_extensions_are_named_by_the_primitive() -> None:
    names = [{"family": "X", "given": ["A", "B"], "_given": [{"id": "g", "extension": QUALIFIER}] * 2}]
    [(code, _, where)] = fed_by_walk(patient(name=names)) or []
    assert (code, where) == ("business-rule", ["Patient.name[0].given[1]"])


@pytest.mark.parametrize(
    "resource",
    [
        # a datatype's object with a resourceType: the structure walk lets it pass, nodes() takes it for a resource
        patient(managingOrganization={"resourceType": "Organization", "reference": "#"}),
        patient(name=[{"family": "X"}, []]),  # an empty array item: the walk skips the whole element
        patient(name={"id": "a", "family": "X"}),  # a repeating element given once: the walk names it name[0]
        patient(gender=["male"]),  # an array where one value belongs: the walk skips it
        patient(identifier=[{"id": "a", "system": "x"} for _ in range(MAX_ISSUES + 1)]),  # the walk stops early
    ],
    ids=["resourceType in a datatype", "empty item", "repeating given once", "array for one", "too many issues"],
)
def test_where_the_walk_departs_from_the_typed_one_the_rules_walk_alone(resource: dict[str, Any]) -> None:
    assert fed_by_walk(resource) is None
    in_check = [issue for issue in check(resource).issues if issue.rule == "reference"]
    assert shown(in_check) == walked_alone(resource)[: len(in_check)]


IDS = ["dup", "dup", "c1", "a", "x_y"]
REFERENCES = ["#", "#c1", "#dup", "#nothing"]
CONTAINED = [
    {"resourceType": "Basic", "id": "c1", "code": {"text": "x", "id": "dup"}},
    {"resourceType": "Basic", "id": "bad_id", "code": {"text": "x"}},
    {"resourceType": "ValueSet", "id": "c1", "status": "active", "url": "http://example.org/vs"},
    {"resourceType": "Organization", "id": "c2", "name": "o", "partOf": {"reference": "#"}},
    {"resourceType": "Organization", "name": "no id"},
]
ODD = [[], {}, "", None, 5, {"resourceType": "Patient"}, [{"id": "dup"}], {"id": "dup", "reference": "#"}]


def _objects(value: Any, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        out.append(value)
        for item in value.values():
            _objects(item, out)
    elif isinstance(value, list):
        for item in value:
            _objects(item, out)
    return out


def changed(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to five changes: mostly ones that keep the resource well formed, now and then one that does not."""
    resource = copy.deepcopy(resource)
    objects = _objects(resource, [])
    for _ in range(rng.randint(1, 5)):
        node = rng.choice(objects)
        strings = [k for k, v in node.items() if isinstance(v, str) and k not in ("id", "resourceType", "div")]
        choice = rng.random()
        if choice < 0.3:
            node["id"] = rng.choice(IDS)
        elif choice < 0.45 and "reference" in node:
            node["reference"] = rng.choice(REFERENCES)
        elif choice < 0.6 and strings:
            key = rng.choice(strings)
            if rng.random() < 0.5:
                node["_" + key] = {"id": rng.choice(IDS), "extension": QUALIFIER}
            else:
                node[key] = rng.choice(REFERENCES)
        elif choice < 0.8 and "resourceType" in node and isinstance(node.get("contained", []), list):
            node.setdefault("contained", []).append(copy.deepcopy(rng.choice(CONTAINED)))
        elif choice < 0.9 and (keys := [k for k in node if k not in ("code", "system")]):
            # (a list or object as a Coding's code or system crashes bindings.py, with or without the fold)
            node[rng.choice(keys)] = copy.deepcopy(rng.choice(ODD))
    return resource


def test_seeded_changes_give_the_same_issues_by_either_walk() -> None:
    rng = random.Random(25)
    fed = with_issues = 0
    for _ in range(5000):
        resource = changed(rng.choice(EXAMPLES), rng)
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or not definitions.is_resource(kind):
            continue
        walked = fed_by_walk(resource)
        if walked is None:
            continue
        assert walked == walked_alone(resource), resource
        fed += 1
        with_issues += bool(walked)
    assert fed > 1500 and with_issues > 400  # the walk's feed was exercised, with issues to find

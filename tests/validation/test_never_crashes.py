"""The validator answers every malformed resource with issues, never an exception (a 500 on the wire): each node of
our examples (the rule families', the invariants', the shipped measures and their responses) replaced by a value
of another JSON shape.  One shape per node, rotating through them, keeps this to a few thousand checks; a sweep of
every shape at every node (~100,000 checks) found the crashes this guards against: a Coding's code or a
CodeableConcept's coding, a SearchParameter's base or component, of the wrong JSON type.  A QuestionnaireResponse
that passes the R4 rules is also checked against its Questionnaire, as a write is."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_server.validation.questionnaire_response import validate_response
from fhir_server.validation.resource import check
from tests.library.examples import QUESTIONNAIRES, all_examples
from tests.validation import invariant_examples
from tests.validation.test_rule_families import CASES

SHAPES: list[Any] = [["x"], {"a": 1}, 1.5, True, None, "", [], {}, [[1]], [{"b": 2}], -1, "x" * 70]
SHIPPED = {
    body["url"]: body for body in (json.loads(p.read_text()) for p in QUESTIONNAIRES.glob("*/questionnaire.json"))
}


def corpus() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"{family}-ok", valid) for family, valid, _, _ in CASES]
    out += [(f"{family}-bad", invalid) for family, _, invalid, _ in CASES]
    out += [
        (f"invariant-{example[0]}-{number}", body)
        for example in invariant_examples.EXAMPLES
        for number, body in enumerate(example[1:])
        if isinstance(body, dict) and "resourceType" in body
    ]
    out += [(example.name, example.response) for example in all_examples()]
    return out + [(url.rsplit("/", 1)[-1], body) for url, body in SHIPPED.items()]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from paths(child, (*prefix, key))


def replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = copy.deepcopy(value)
    return changed


@pytest.mark.parametrize(("name", "resource"), corpus(), ids=[name for name, _ in corpus()])
def test_every_node_of_the_wrong_shape_gives_issues_not_an_exception(name, resource):
    checked = 0
    for number, path in enumerate(paths(resource)):
        if path == ("resourceType",):
            continue
        changed = replaced(resource, path, SHAPES[number % len(SHAPES)])
        report = check(changed, resource["resourceType"])  # raises on a crash: the test fails naming the path
        questionnaire = SHIPPED.get(str(changed.get("questionnaire", "")).partition("|")[0])
        if resource["resourceType"] == "QuestionnaireResponse" and not report.errors and questionnaire:
            validate_response(changed, questionnaire, None)
        checked += 1
    assert checked >= 1

"""Every invariant of the resources this product writes, through the HTTP API on SQLite and PostgreSQL: the failing
example is refused by create (400, the invariant named) exactly when ``$validate`` calls it an error, and the
passing example is stored.  The examples are ``invariant_examples.py``'s, written for these tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.validation import definitions, invariants
from tests.api.fhir import post
from tests.validation.invariant_examples import EXAMPLES


def _id(example: tuple[str, dict[str, Any], dict[str, Any]]) -> str:
    return f"{example[0]}-{example[1]['resourceType']}"


def _judged(key: str) -> bool:
    return not definitions.constraint_table()[key].get("bestPractice")


def _errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def _mentions(outcome: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [i for i in outcome["issue"] if f"Constraint failed: {key.split('@')[0]}:" in i.get("diagnostics", "")]


@pytest.mark.parametrize("example", [e for e in EXAMPLES if _judged(e[0])], ids=_id)
def test_the_passing_example_validates_and_is_stored(client, example):
    key, passing, _ = example
    resource_type = passing["resourceType"]
    outcome = post(client, f"/{resource_type}/$validate", passing).json()
    assert not _errors(outcome) and not _mentions(outcome, key), outcome
    created = post(client, f"/{resource_type}", copy.deepcopy(passing))
    assert created.status_code == 201, created.text[:500]


@pytest.mark.parametrize("example", [e for e in EXAMPLES if _judged(e[0])], ids=_id)
def test_the_failing_example_is_refused_exactly_when_validate_calls_it_an_error(client, example):
    key, _, failing = example
    resource_type = failing["resourceType"]
    outcome = post(client, f"/{resource_type}/$validate", failing).json()
    found = _mentions(outcome, key)
    assert found, outcome
    severity = "error" if invariants.constraint(key).severity == "error" else "warning"
    assert {i["severity"] for i in found} == {severity}
    assert all(i["code"] == "invariant" and i["expression"] for i in found)
    created = post(client, f"/{resource_type}", copy.deepcopy(failing))
    if severity == "error":
        assert created.status_code == 400, created.text[:300]
        assert _mentions(created.json(), key)
        assert _errors(created.json()) == _errors(outcome)
    else:
        assert created.status_code == 201, created.text[:300]

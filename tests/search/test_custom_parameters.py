"""FHIR R4 §3.1.1 search with parameters the server did not ship: SearchParameter resources (R4 SearchParameter:
code, base, type, expression) POSTed to the server extend what it can search, are listed in the
CapabilityStatement (CapabilityStatement.rest.resource.searchParam), and apply to resources stored before them once
the index is rebuilt (``fhir-server reindex``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.api.fhir import assert_outcome, post
from tests.search.helpers import create, found, search

COLOUR = "http://example.org/StructureDefinition/colour"


@pytest.fixture
def define(client, uid):
    """POST SearchParameters for the test (each with a code unique to it); delete them afterwards."""
    made = []

    def define(code, base, type_, expression, **extra):
        resource = {
            "resourceType": "SearchParameter",
            "url": f"http://example.org/SearchParameter/{code}",
            "name": code.replace("-", "_"),
            "status": "active",
            "description": f"test parameter {code}",
            "code": code,
            "base": [base],
            "type": type_,
            "expression": expression,
            **extra,
        }
        resource = {k: v for k, v in resource.items() if v is not None}  # None: leave the element out
        response = post(client, "/SearchParameter", resource)
        if response.status_code == 201:
            made.append(response.json()["id"])
        return response

    yield define
    for spid in made:
        client.delete(f"/SearchParameter/{spid}")


def _coloured(client, uid, colour):
    extension = [{"url": f"{COLOUR}/{uid}", "valueString": colour}]
    return create(
        client,
        {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}], "extension": extension},
    )


def _listed(client, resource_type, code):
    statement = client.get("/metadata").json()
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == resource_type]
    return [p for p in entry.get("searchParam", []) if p["name"] == code]


def test_a_string_parameter_on_an_extension_finds_resources_written_after_it(client, uid, define):
    code = f"colour-{uid}"
    expression = f"Patient.extension.where(url='{COLOUR}/{uid}').valueString"
    assert define(code, "Patient", "string", expression).status_code == 201
    red, blue = _coloured(client, uid, "Vermilion"), _coloured(client, uid, "Blue")
    assert found(client, "/Patient", {code: "vermil"}) == {red}  # string rules: starts-with, any case
    assert found(client, "/Patient", {f"{code}:exact": "Blue"}) == {blue}
    assert found(client, "/Patient", {code: "green"}) == set()
    assert found(client, "/Patient", {"identifier": f"urn:test|{uid}", f"{code}:missing": "true"}) == set()
    strict = client.get("/Patient", params={code: "blue"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 200  # a known parameter now, even under strict handling
    [listed] = _listed(client, "Patient", code)
    assert listed["type"] == "string" and listed["definition"] == f"http://example.org/SearchParameter/{code}"


def test_the_usual_extension_expression_with_value(client, uid, define):
    code = f"fav-colour-{uid}"
    assert define(code, "Patient", "string", f"Patient.extension.where(url='{COLOUR}/{uid}').value").status_code == 201
    red = _coloured(client, uid, "Red")
    assert found(client, "/Patient", {code: "red"}) == {red}


def test_metadata_lists_a_new_parameter_at_once(client, uid, define):
    code = f"listed-{uid}"
    assert define(code, "Patient", "token", "Patient.maritalStatus").status_code == 201
    assert _listed(client, "Patient", code)


def test_a_token_parameter(client, uid, define):
    code = f"method-{uid}"
    assert define(code, "Observation", "token", "Observation.method").status_code == 201
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    by_hand = create(client, {**observation, "method": {"coding": [{"system": f"urn:m:{uid}", "code": "hand"}]}})
    create(client, {**observation, "method": {"coding": [{"system": f"urn:m:{uid}", "code": "machine"}]}})
    assert found(client, "/Observation", {code: f"urn:m:{uid}|hand"}) == {by_hand}
    assert len(found(client, "/Observation", {code: f"urn:m:{uid}|"})) == 2


NUMBER_CASES = [  # the prefixes and precision rules in full are in test_parameter_types.py
    ("0.55", {0.55}),
    ("0.5", set()),  # [0.45, 0.55): the precision of the value sets the range
    ("gt0.5", {0.55, 0.9}),
    ("le0.2", {0.2}),
]


def test_a_number_parameter(client, uid, define):
    code = f"probability-{uid}"
    expression = "(RiskAssessment.prediction.probability as decimal)"
    assert define(code, "RiskAssessment", "number", expression).status_code == 201
    subject = {"reference": f"Patient/{create(client, {'resourceType': 'Patient'})}"}
    made = {
        p: create(
            client,
            {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": subject,
                "prediction": [{"probabilityDecimal": p}],
            },
        )
        for p in (0.2, 0.55, 0.9)
    }
    for value, expected in NUMBER_CASES:
        assert found(client, "/RiskAssessment", {code: value}) == {made[p] for p in expected}, value
    response = client.get("/RiskAssessment", params={code: "zz0.5"})
    assert_outcome(response, 400, "value")


@pytest.mark.parametrize(
    ("base", "type_", "expression", "issue"),
    [
        ("Patient", "string", "!!!", "invalid"),  # does not compile
        ("Patient", "special", "Patient.name", "not-supported"),  # special parameters need code of their own
        ("Patient", "nonsense", "Patient.name", "code-invalid"),  # SearchParameter.type: a required binding,
        ("Nonsense", "string", "Patient.name", "code-invalid"),  # SearchParameter.base: a required binding
        ("Patient", "string", None, "required"),
    ],
)
def test_definitions_the_server_cannot_honour_are_refused(client, uid, define, base, type_, expression, issue):
    assert_outcome(define(f"bad-{uid}", base, type_, expression), 400, issue)


@pytest.mark.parametrize("expression", ["Patient.extension.where(url=", "Patient.name.where(family = 'x'"])
def test_an_expression_that_does_not_parse_is_refused(client, uid, define, expression):
    assert_outcome(define(f"broken-{uid}", "Patient", "string", expression), 400, "invalid")


def test_reindex_applies_a_new_parameter_to_resources_stored_before_it(client, uid, define, server):
    before = _coloured(client, uid, "Ochre")
    code = f"old-colour-{uid}"
    assert (
        define(code, "Patient", "string", f"Patient.extension.where(url='{COLOUR}/{uid}').valueString").status_code
        == 201
    )
    after = _coloured(client, uid, "Ochre")
    assert found(client, "/Patient", {code: "ochre"}) == {after}  # not yet indexed: the older one is missed
    env = {**os.environ, "FHIR_SERVER_DATABASE_URL": server.settings.database_url}
    run = subprocess.run(
        [sys.executable, "-m", "fhir_server", "reindex", "--type", "Patient"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "re-indexed" in run.stdout
    assert found(client, "/Patient", {code: "ochre"}) == {before, after}


def test_a_deleted_or_retired_parameter_is_no_longer_searchable(client, uid, define):
    code = f"gone-{uid}"
    created = define(code, "Patient", "token", "Patient.maritalStatus")
    assert created.status_code == 201
    strict = {"Prefer": "handling=strict"}
    assert client.get("/Patient", params={code: "M"}, headers=strict).status_code == 200
    assert client.delete(f"/SearchParameter/{created.json()['id']}").status_code == 200
    response = client.get("/Patient", params={code: "M"}, headers=strict)
    assert_outcome(response, 400, "not-supported")
    retired = f"retired-{uid}"
    assert define(retired, "Patient", "token", "Patient.maritalStatus", status="retired").status_code == 201
    assert_outcome(client.get("/Patient", params={retired: "M"}, headers=strict), 400, "not-supported")
    bundle = search(client, "/Patient", {retired: "M", "_count": "1"})
    assert retired in str(bundle["entry"][-1]["resource"])  # reported as ignored

"""What the validator consults beyond the R4 tables, through the HTTP API on SQLite and PostgreSQL: profiles (core,
stored, asked for by ``$validate?profile=``), a Questionnaire contained in its response, this site's rule families
taken as warnings, and an external terminology server (a second instance of this server, holding code systems the
first does not)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.validation.core_profiles import core_profile
from tests.api.fhir import post
from tests.support.server import ServerThread

SNOMED = "http://snomed.info/sct"
BODYTEMP = "http://hl7.org/fhir/StructureDefinition/bodytemp"


def _errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def temperature(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2026-01-01T10:00:00Z",
        "valueQuantity": {"value": 37.2, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
        **extra,
    }  # fmt: skip


def test_an_unknown_profile_asked_for_is_not_supported_never_passed(client, uid):
    answer = client.post(
        "/Observation/$validate", params={"profile": f"http://example.org/StructureDefinition/none-{uid}"},
        content=httpx.Request("POST", "x", json=temperature()).content,
        headers={"Content-Type": "application/fhir+json"},
    )  # fmt: skip
    errors = _errors(answer.json())
    assert [e["code"] for e in errors] == ["not-supported"], answer.json()
    assert "passed" not in answer.text.lower()


def test_a_core_profile_asked_for_is_applied(client):
    ok = client.post("/Observation/$validate", params={"profile": BODYTEMP}, json=temperature()).json()
    assert not _errors(ok), ok
    no_unit = temperature(valueQuantity={"value": 37.2})
    bad = client.post("/Observation/$validate", params={"profile": BODYTEMP}, json=no_unit).json()
    assert any("bodytemp" in e["diagnostics"] for e in _errors(bad)), bad


def test_a_stored_profile_is_applied_to_the_resources_that_claim_it(client, uid):
    profile = copy.deepcopy(core_profile(BODYTEMP))
    url = f"http://example.org/StructureDefinition/site-temperature-{uid}"
    profile.update({"url": url, "id": f"t-{uid}", "name": "SiteTemperature"})
    profile.pop("text", None)
    for element in profile["snapshot"]["element"]:  # the server's copy keeps no documentation; sdf-3 wants some
        element.setdefault("definition", f"As {element['path']} in the core profile.")
    assert post(client, "/StructureDefinition", profile).status_code == 201
    claimed = temperature(meta={"profile": [url]})
    assert post(client, "/Observation", claimed).status_code == 201
    wrong = temperature(meta={"profile": [url]}, valueQuantity={"value": 37.2, "unit": "degrees"})
    refused = post(client, "/Observation", wrong)
    assert refused.status_code == 400 and url in refused.text, refused.text[:400]
    # the same profile by $validate's parameter, and the Parameters form of the operation
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": temperature()},
                                                        {"name": "profile", "valueUri": url}]}  # fmt: skip
    assert not _errors(post(client, "/Observation/$validate", body).json())


def test_a_claimed_profile_the_server_does_not_hold_is_a_warning(client, uid):
    claimed = temperature(meta={"profile": [f"http://example.org/StructureDefinition/unheld-{uid}"]})
    outcome = post(client, "/Observation/$validate", claimed).json()
    assert not _errors(outcome)
    assert [i["severity"] for i in outcome["issue"] if "unheld" in i["diagnostics"]] == ["warning"]
    assert post(client, "/Observation", claimed).status_code == 201


def response_with_contained(answer: dict[str, Any]) -> dict[str, Any]:
    questionnaire = {"resourceType": "Questionnaire", "id": "q", "status": "active",
                     "item": [{"linkId": "mood", "text": "Mood today", "type": "integer"}]}  # fmt: skip
    return {
        "resourceType": "QuestionnaireResponse",
        "contained": [questionnaire],
        "questionnaire": "#q",
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "item": [{"linkId": "mood", "answer": [answer]}],
    }


def test_a_response_is_checked_against_the_questionnaire_it_contains(client):
    good = response_with_contained({"valueInteger": 4})
    assert not _errors(post(client, "/QuestionnaireResponse/$validate", good).json())
    assert post(client, "/QuestionnaireResponse", good).status_code == 201
    wrong = response_with_contained({"valueString": "four"})
    outcome = post(client, "/QuestionnaireResponse/$validate", wrong).json()
    assert _errors(outcome), outcome
    refused = post(client, "/QuestionnaireResponse", wrong)
    assert refused.status_code == 422 and _errors(refused.json()) == _errors(outcome)


def test_a_response_to_a_questionnaire_nobody_here_holds_is_stored_with_a_warning(client, uid):
    response = {"resourceType": "QuestionnaireResponse", "status": "completed",
                "questionnaire": f"http://forms.example.org/Questionnaire/{uid}",
                "item": [{"linkId": "1", "answer": [{"valueInteger": 1}]}]}  # fmt: skip
    outcome = post(client, "/QuestionnaireResponse/$validate", response).json()
    assert not _errors(outcome)
    assert [i["severity"] for i in outcome["issue"] if i.get("expression") == [
        "QuestionnaireResponse.questionnaire"]] == ["warning"]  # fmt: skip
    assert post(client, "/QuestionnaireResponse", response).status_code == 201
    # a canonical of the specification's that names another type is an error, not an unknown Questionnaire
    response["questionnaire"] = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert post(client, "/QuestionnaireResponse", response).status_code == 422


def _server(database_url: str, backend: str, **settings: Any) -> ServerThread:
    config = Settings(database_url=database_url, max_body_bytes=256 * 1024, _env_file=None, **settings)
    return ServerThread(config, backend)


def test_a_site_may_take_a_rule_family_as_warnings(database_url, backend):
    done = {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}
    with _server(database_url, backend, validation_warn_only="binding") as running:
        base = running.fhir_base
        with httpx.Client(base_url=base, timeout=30) as client:
            outcome = post(client, "/Observation/$validate", done).json()
            assert not _errors(outcome)
            warned = [i for i in outcome["issue"] if i["severity"] == "warning"]
            assert warned and "downgraded" in warned[0]["diagnostics"]
            assert post(client, "/Observation", done).status_code == 201
            # structure is never downgraded
            assert post(client, "/Observation", {**done, "status": "final", "colour": "red"}).status_code == 400


def test_a_rule_family_that_cannot_be_downgraded_stops_the_server_with_a_clear_error():
    from fhir_server.validation.families import parse_warn_only

    with pytest.raises(ValueError, match="structure cannot be downgraded"):
        parse_warn_only("binding, structure")
    with pytest.raises(ValueError, match="unknown rule family bindings"):
        parse_warn_only("bindings")


SNOMED_FRAGMENT = {
    "resourceType": "CodeSystem",
    "url": SNOMED,
    "status": "active",
    "content": "fragment",
    "concept": [{"code": "276885007", "display": "Core body temperature"}],
}


def test_codes_of_systems_the_server_does_not_hold_go_to_the_terminology_server(database_url, backend, server):
    coded = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": SNOMED, "code": "276885007", "display": "Core body temperature"}]},
    }
    # without a terminology server: not judged, and $validate says so
    with httpx.Client(base_url=server.fhir_base, timeout=30) as plain:
        outcome = post(plain, "/Condition/$validate", coded).json()
        assert not _errors(outcome) and not any("not judged" in i["diagnostics"] for i in outcome["issue"])
    # a terminology server: a second instance of this server, holding a fragment of SNOMED CT
    with _server(database_url, backend) as terminology, httpx.Client(base_url=terminology.fhir_base) as tx:
        assert post(tx, "/CodeSystem", SNOMED_FRAGMENT).status_code == 201
        with (
            _server(database_url, backend, terminology_url=terminology.fhir_base) as running,
            httpx.Client(base_url=running.fhir_base, timeout=30) as client,
        ):
            assert not _errors(post(client, "/Condition/$validate", coded).json())
            unknown = copy.deepcopy(coded)
            unknown["code"]["coding"][0]["code"] = "999999999"
            outcome = post(client, "/Condition/$validate", unknown).json()
            assert ["Unknown code" in e["diagnostics"] for e in _errors(outcome)] == [True], outcome
            assert post(client, "/Condition", unknown).status_code == 400
            wrong_display = copy.deepcopy(coded)
            wrong_display["code"]["coding"][0]["display"] = "Temperature of the room"
            outcome = post(client, "/Condition/$validate", wrong_display).json()
            assert not _errors(outcome) and any(i["severity"] == "warning" for i in outcome["issue"])
            loinc = copy.deepcopy(coded)
            loinc["code"]["coding"][0]["system"] = "http://loinc.org"
            outcome = post(client, "/Condition/$validate", loinc).json()  # a system the terminology server lacks
            assert not _errors(outcome) and any("not judged" in i["diagnostics"] for i in outcome["issue"])


def test_a_write_the_validator_warns_about_is_stored_and_the_warning_returned(client, uid):
    claimed = temperature(meta={"profile": [f"http://example.org/StructureDefinition/unheld-{uid}"]})
    answer = post(client, "/Observation", claimed, Prefer="return=OperationOutcome")
    assert answer.status_code == 201
    warned = [i for i in answer.json()["issue"] if i["severity"] == "warning"]
    assert warned and "unheld" in warned[0]["diagnostics"], answer.json()
    plain = post(client, "/Observation", temperature(), Prefer="return=OperationOutcome")
    assert not [i for i in plain.json()["issue"] if i["severity"] == "warning"]

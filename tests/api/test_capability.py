"""FHIR R4 §3.1.0.12 capabilities: /metadata is generated from what the server implements."""

from __future__ import annotations

from fhir_server.validation import validate_resource


def test_capability_statement_declares_r4_and_what_is_implemented(client):
    response = client.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    validate_resource(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert "json" in statement["format"]
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert "Questionnaire" in by_type and "QuestionnaireResponse" in by_type
    assert "MedicinalProduct" not in by_type  # not modelled by the R4B classes: not claimed
    patient = by_type["Patient"]
    assert {i["code"] for i in patient["interaction"]} >= {"read", "vread", "update", "patch", "delete", "create"}
    assert patient["conditionalDelete"] == "single" and patient["versioning"] == "versioned"
    params = {p["name"]: p for p in patient["searchParam"]}
    assert params["identifier"]["type"] == "token"
    assert params["_lastUpdated"]["type"] == "date"
    assert params["birthdate"]["definition"] == "http://hl7.org/fhir/SearchParameter/individual-birthdate"

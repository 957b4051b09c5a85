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
    assert "Parameters" not in by_type  # refused, not stored and ignored
    topics = {e["valueCanonical"] for e in by_type["Subscription"]["extension"]}  # Subscriptions Backport discovery
    assert "http://fit-fhir.org/fhir/SubscriptionTopic/flag-raised-or-closed" in topics and len(topics) == 3
    patient = by_type["Patient"]
    assert {i["code"] for i in patient["interaction"]} >= {"read", "vread", "update", "patch", "delete", "create"}
    assert patient["conditionalDelete"] == "single" and patient["versioning"] == "versioned-update"
    assert patient["conditionalRead"] == "full-support"
    params = {p["name"]: p for p in patient["searchParam"]}
    assert params["identifier"]["type"] == "token"
    assert params["_lastUpdated"]["type"] == "date"
    assert params["birthdate"]["definition"] == "http://hl7.org/fhir/SearchParameter/individual-birthdate"


def test_standard_operations_name_hl7s_definitions_and_ours_resolve_here(client):
    rest = client.get("/metadata").json()["rest"][0]
    operations = {(r["type"], o["name"]): o["definition"] for r in rest["resource"] for o in r.get("operation", [])}
    assert operations[("Patient", "everything")] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    assert (
        operations[("CodeSystem", "validate-code")]
        == "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code"
    )
    assert operations[("ValueSet", "validate-code")] == "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"
    assert operations[("QuestionnaireResponse", "extract")] == (
        "http://hl7.org/fhir/uv/sdc/OperationDefinition/QuestionnaireResponse-extract"
    )
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"  # Bulk Data Access 2.0's, per level
    assert operations[("Patient", "export")] == f"{bulk}/patient-export"
    assert operations[("Group", "export")] == f"{bulk}/group-export"
    assert [o["definition"] for o in rest["operation"] if o["name"] == "export"] == [f"{bulk}/export"]
    own = operations[("Patient", "alliance-summary")]
    found = client.get("/OperationDefinition", params={"url": own}).json()["entry"]
    assert len(found) == 1 and found[0]["resource"]["code"] == "alliance-summary"
    validate_resource(found[0]["resource"])

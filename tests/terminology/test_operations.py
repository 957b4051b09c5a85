"""FHIR R4 terminology module over the project's own code systems: CodeSystem/$lookup, $validate-code on
CodeSystem and ValueSet, ValueSet/$expand with filter, count and offset; unknown systems answer 404; the
library's artifacts are searchable by url, version, name, code, status and context."""

from __future__ import annotations

from tests.api.fhir import assert_outcome, post

MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"
FLAGS_VS = "http://fit-fhir.org/fhir/ValueSet/fit-flags"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs"


def _params(parameters):
    return {
        p["name"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in parameters["parameter"]
        if any(k.startswith("value") for k in p)
    }


def test_lookup(client):
    found = client.get("/CodeSystem/$lookup", params={"system": MEASURES, "code": "srs-total"})
    assert found.status_code == 200
    params = _params(found.json())
    assert params["display"] == "SRS total score" and params["version"] == "1.1.0" and params["definition"]
    by_instance = client.get("/CodeSystem/fit-measures-1.1.0/$lookup", params={"code": "wai-sr-1"})
    assert _params(by_instance.json())["display"]
    assert_outcome(client.get("/CodeSystem/$lookup", params={"system": MEASURES, "code": "nope"}), 404, "not-found")
    assert_outcome(
        client.get("/CodeSystem/$lookup", params={"system": "http://snomed.info/sct", "code": "1"}), 404, "not-found"
    )
    assert_outcome(client.get("/CodeSystem/$lookup", params={"system": MEASURES}), 400, "required")


def test_validate_code(client):
    ok = _params(client.get("/CodeSystem/$validate-code", params={"url": MEASURES, "code": "ors-total"}).json())
    assert ok["result"] is True
    bad = _params(client.get("/CodeSystem/$validate-code", params={"url": MEASURES, "code": "xyz"}).json())
    assert bad["result"] is False and "xyz" in bad["message"]
    wrong_display = client.get(
        "/CodeSystem/$validate-code", params={"url": MEASURES, "code": "ors-total", "display": "X"}
    )
    assert _params(wrong_display.json())["result"] is False
    in_vs = client.get(
        "/ValueSet/$validate-code",
        params={"url": FLAGS_VS, "system": "http://fit-fhir.org/fhir/CodeSystem/fit-flags", "code": "srs-below-cutoff"},
    )
    assert _params(in_vs.json())["result"] is True
    not_in_vs = client.get("/ValueSet/$validate-code", params={"url": FLAGS_VS, "code": "srs-total"})
    assert _params(not_in_vs.json())["result"] is False
    coding = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "url", "valueUri": FLAGS_VS},
            {
                "name": "coding",
                "valueCoding": {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-flags", "code": "srs-drop"},
            },
        ],
    }
    assert _params(post(client, "/ValueSet/$validate-code", coding).json())["result"] is True
    assert_outcome(
        client.get("/ValueSet/$validate-code", params={"url": "http://x/none", "code": "a"}), 404, "not-found"
    )


def test_expand_with_filter_count_and_offset(client):
    whole = client.get("/ValueSet/$expand", params={"url": FLAGS_VS}).json()
    total = whole["expansion"]["total"]
    codes = [c["code"] for c in whole["expansion"]["contains"]]
    assert total == len(codes) >= 9 and "srs-below-cutoff" in codes
    page = client.get("/ValueSet/$expand", params={"url": FLAGS_VS, "count": "3", "offset": "2"}).json()
    assert [c["code"] for c in page["expansion"]["contains"]] == codes[2:5]
    assert page["expansion"]["total"] == total and page["expansion"]["offset"] == 2
    filtered = client.get("/ValueSet/$expand", params={"url": FLAGS_VS, "filter": "ors"}).json()
    assert {c["code"] for c in filtered["expansion"]["contains"]} == {c for c in codes if "ors" in c}
    assert_outcome(client.get("/ValueSet/$expand", params={"url": FLAGS_VS, "count": "x"}), 400, "value")
    assert_outcome(client.get("/ValueSet/$expand", params={"url": "http://x/none"}), 404, "not-found")
    assert_outcome(client.get("/ValueSet/$expand"), 400, "required")


def test_conceptmap_and_terminology_resources_are_served(client):
    maps = client.get("/ConceptMap", params={"url": "http://fit-fhir.org/fhir/ConceptMap/fit-to-snomed"}).json()
    targets = {e["code"]: e["target"][0]["code"] for g in maps["entry"][0]["resource"]["group"] for e in g["element"]}
    assert targets["srs-total"] == "720482000" and targets["ors-total"] == "716613004"


def test_questionnaires_are_searchable_by_url_version_name_code_status_and_context(client):
    def ids(params):
        return {e["resource"]["id"] for e in client.get("/Questionnaire", params=params).json().get("entry", [])}

    assert ids({"url": SRS}) == {"srs-1.0.2"}
    assert ids({"url": SRS, "version": "1.0.2"}) == {"srs-1.0.2"}
    assert ids({"url": SRS, "version": "9.9.9"}) == set()
    assert ids({"name": "SessionRatingScale"}) == {"srs-1.0.2"}
    assert ids({"code": "http://snomed.info/sct|716613004"}) == {"ors-1.0.2"}
    assert "srs-1.0.2" in ids({"status": "active", "_count": "1000"})  # the database is shared with other tests
    alliance = ids({"context": "alliance"})
    assert {"srs-1.0.2", "wai-sr-1.0.2", "csrs-1.0.2"} <= alliance and "ors-1.0.2" not in alliance

"""FHIR R4 §3.1.1.4 search parameter types, continued: reference (with the §3.1.1.5 modifiers :[type], :identifier
and :missing), uri (:below, :above) and composite; and the value rules that hold for every type: a comma means OR,
a repeated parameter means AND, and ``\\,`` ``\\|`` ``\\$`` escape the separators."""

from __future__ import annotations

import json

import pytest

from tests.search.helpers import coding, create, found, observation, quantity, ref

OTHER_SERVER = "http://other.example.org/fhir"


# -- reference -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def referring(shared_client, shared_uid):
    """Observations whose subject is a Patient, an absolute URL elsewhere, or only an identifier."""
    client, system = shared_client, f"urn:codes:{shared_uid}:ref"
    patient = create(client, {"resourceType": "Patient"})
    group = create(client, {"resourceType": "Group", "type": "person", "actual": True})
    made = {
        "patient": create(client, observation(system, subject=ref("Patient", patient))),
        "group": create(client, observation(system, subject=ref("Group", group))),
        "absolute": create(client, observation(system, subject={"reference": f"{OTHER_SERVER}/Patient/{shared_uid}"})),
        "identifier": create(
            client, observation(system, subject={"identifier": {"system": "urn:ids", "value": shared_uid}})
        ),
    }
    return system, patient, group, made


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("subject", "Patient/{patient}", {"patient"}),
        ("subject", "{patient}", {"patient"}),  # a bare id: any target type
        ("subject:Patient", "{patient}", {"patient"}),
        ("subject:Group", "{patient}", set()),
        ("subject", "Group/{group}", {"group"}),
        ("subject", "Patient/{group}", set()),
        ("patient", "{patient}", {"patient"}),  # the Patient-only parameter
        ("patient", "Group/{group}", set()),  # its expression keeps only references to a Patient
        ("subject", OTHER_SERVER + "/Patient/{uid}", {"absolute"}),
        ("subject", OTHER_SERVER + "/Patient/other", set()),
        ("subject:identifier", "urn:ids|{uid}", {"identifier"}),
        ("subject:identifier", "{uid}", {"identifier"}),
        ("subject:identifier", "urn:other|{uid}", set()),
        ("subject:missing", "true", set()),  # a Reference with only an identifier has a value all the same
        ("subject:missing", "false", {"patient", "group", "absolute", "identifier"}),
    ],
)
def test_reference_forms(shared_client, shared_uid, referring, param, value, expected):
    system, patient, group, made = referring
    value = value.format(patient=patient, group=group, uid=shared_uid)
    assert found(shared_client, "/Observation", {"code": f"{system}|a", param: value}) == {
        made[name] for name in expected
    }


@pytest.mark.parametrize(
    ("param", "value"),
    [("subject:Patient", "Group/x"), ("subject:Nonsense", "x"), ("subject", "Patient/bad id!"), ("subject", "/")],
)
def test_contradictory_or_malformed_references_are_refused(shared_client, shared_uid, param, value):
    response = shared_client.get("/Observation", params={"code": f"urn:codes:{shared_uid}|a", param: value})
    assert response.status_code == 400, response.text
    assert "subject" in response.json()["issue"][0]["diagnostics"]


# -- uri -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def canonical(shared_client, shared_uid):
    base = f"http://example.org/{shared_uid}/Questionnaire"
    urls = {"root": base, "phq9": f"{base}/phq9", "phq9v2": f"{base}/phq9/v2", "sibling": f"{base}-other"}
    made = {
        name: create(shared_client, {"resourceType": "Questionnaire", "status": "active", "url": url})
        for name, url in urls.items()
    }
    return base, made


@pytest.mark.parametrize(
    ("param", "suffix", "expected"),
    [
        ("url", "/phq9", {"phq9"}),  # exact by default
        ("url", "/PHQ9", set()),  # uris are case-sensitive
        ("url", "/phq", set()),  # ... and not prefixes
        ("url:below", "/phq9", {"phq9", "phq9v2"}),
        ("url:below", "", {"root", "phq9", "phq9v2", "sibling"}),
        ("url:below", "/", {"phq9", "phq9v2"}),
        ("url:above", "/phq9/v2/extra", {"root", "phq9", "phq9v2"}),
        ("url:above", "/phq9", {"root", "phq9"}),
        ("url:above", "/gad7", {"root"}),
    ],
)
def test_uri_exact_below_and_above(shared_client, canonical, param, suffix, expected):
    base, made = canonical
    assert found(shared_client, "/Questionnaire", {param: base + suffix}) == {made[name] for name in expected}


# -- composite -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pressures(shared_client, shared_uid):
    """Blood-pressure-like Observations: the components carry the codes and values."""
    client, s = shared_client, f"urn:codes:{shared_uid}:bp"

    def bp(systolic, diastolic):
        return observation(
            s,
            "bp",
            component=[
                {"code": {"coding": [coding(s, "sys")]}, "valueQuantity": quantity(systolic, "mm[Hg]")},
                {"code": {"coding": [coding(s, "dia")]}, "valueQuantity": quantity(diastolic, "mm[Hg]")},
            ],
        )

    made = {
        "high": create(client, bp(150, 95)),
        "normal": create(client, bp(115, 75)),
        "weight": create(client, observation(s, "weight", valueQuantity=quantity(70, "kg"))),
        "light": create(client, observation(s, "weight", valueQuantity=quantity(4, "kg"))),
    }
    return s, made


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("code-value-quantity", "{s}|weight$gt5", {"weight"}),
        ("code-value-quantity", "{s}|weight$lt5", {"light"}),
        ("code-value-quantity", "{s}|weight$70|http://unitsofmeasure.org|kg", {"weight"}),
        ("code-value-quantity", "{s}|weight$70||g", set()),
        ("code-value-quantity", "{s}|bp$gt5", set()),  # its values are in the components
        ("code-value-quantity", "{s}|weight$lt5,{s}|weight$gt60", {"weight", "light"}),  # OR of pairs
        ("component-code-value-quantity", "{s}|sys$gt140", {"high"}),
        ("component-code-value-quantity", "{s}|dia$gt90", {"high"}),
        ("component-code-value-quantity", "{s}|sys$lt140", {"normal"}),
        # 115 is a systolic value and 95 a diastolic one: code and value must hold in the SAME component
        ("component-code-value-quantity", "{s}|dia$115", set()),
        ("component-code-value-quantity", "{s}|dia$gt100", set()),
        ("component-code-value-quantity", "{s}|sys$95", set()),
        ("component-code-value-quantity", "{s}|dia$75|http://unitsofmeasure.org|mm[Hg]", {"normal"}),
    ],
)
def test_composite_parameters(shared_client, pressures, param, value, expected):
    s, made = pressures
    matched = found(shared_client, "/Observation", {"code": f"{s}|bp,{s}|weight", param: value.format(s=s)})
    assert matched == {made[name] for name in expected}


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        # combo-X is X | component-X: the Observation's own values and its components' values
        ("combo-code", "{s}|sys", {"high", "normal"}),
        ("combo-code", "{s}|weight", {"weight", "light"}),
        ("combo-code", "{s}|bp", {"high", "normal"}),
        ("combo-code:not", "{s}|sys", {"weight", "light"}),
        ("combo-value-quantity", "gt140", {"high"}),
        ("combo-value-quantity", "lt5", {"light"}),
        ("combo-value-quantity", "70", {"weight"}),
        ("combo-code-value-quantity", "{s}|sys$gt140", {"high"}),
        ("combo-code-value-quantity", "{s}|weight$gt60", {"weight"}),
        ("combo-code-value-quantity", "{s}|dia$115", set()),  # 115 is the other component's value
        ("combo-code-value-quantity", "{s}|bp$gt5", set()),  # bp's values are in its components
        ("combo-code-value-quantity", "{s}|dia$75,{s}|weight$lt5", {"normal", "light"}),
        ("combo-value-quantity:missing", "false", {"high", "normal", "weight", "light"}),
        ("combo-value-concept:missing", "true", {"high", "normal", "weight", "light"}),
    ],
)
def test_combo_parameters_search_the_observation_and_its_components(shared_client, pressures, param, value, expected):
    s, made = pressures
    matched = found(shared_client, "/Observation", {"code": f"{s}|bp,{s}|weight", param: value.format(s=s)})
    assert matched == {made[name] for name in expected}


def test_sorting_by_a_combo_parameter(shared_client, pressures):
    s, made = pressures
    bundle = shared_client.get(
        "/Observation", params={"code": f"{s}|bp,{s}|weight", "_sort": "combo-value-quantity"}
    ).json()
    order = [e["resource"]["id"] for e in bundle["entry"]]
    assert order == [made["light"], made["weight"], made["normal"], made["high"]]  # lowest values 4, 70, 75, 95


def test_combo_parameters_store_no_rows_of_their_own():
    from fhir_server.search.indexer import SearchIndexer
    from fhir_server.search.registry import default_registry

    s = "urn:codes:combo-rows"
    resource = observation(
        s, "bp", component=[{"code": {"coding": [coding(s, "sys")]}, "valueQuantity": quantity(120, "mm[Hg]")}]
    )
    rows = SearchIndexer(default_registry()).index_rows("Observation", resource)
    params = {row["param"] for table in rows.values() for row in table}
    assert {"code", "component-code", "component-value-quantity"} <= params
    assert not [p for p in params if p.startswith("combo-")]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("code-value-quantity", "urn:x|a"),  # one component missing
        ("code-value-quantity", "urn:x|a$5$6"),  # one too many
        ("code-value-quantity", "urn:x|a$abc"),  # the quantity part is not a number
        ("code-value-quantity:exact", "urn:x|a$5"),  # composites take no modifiers
    ],
)
def test_malformed_composites_are_refused(shared_client, param, value):
    response = shared_client.get("/Observation", params={param: value})
    assert response.status_code == 400, response.text
    assert "code-value-quantity" in response.json()["issue"][0]["diagnostics"]


# -- OR, AND and escaping --------------------------------------------------------------------------------------
def test_comma_is_or_and_repetition_is_and(client, uid):
    s = f"urn:codes:{uid}"
    only_a = create(client, observation(s, "a"))
    only_b = create(client, observation(s, "b"))
    both = create(client, {**observation(s, "a"), "code": {"coding": [coding(s, "a"), coding(s, "b")]}})
    assert found(client, "/Observation", {"code": f"{s}|a,{s}|b"}) == {only_a, only_b, both}
    assert found(client, "/Observation", [("code", f"{s}|a"), ("code", f"{s}|b")]) == {both}
    assert found(client, "/Observation", [("code", f"{s}|a,{s}|b"), ("code", f"{s}|b")]) == {only_b, both}
    assert found(client, "/Observation", [("code", f"{s}|a"), ("code:not", f"{s}|b")]) == {only_a}


def test_escaped_separators_are_part_of_the_value(client, uid):
    comma = create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test", "value": f"{uid},x|y"}],
            "name": [{"family": f"Smith,Jones{uid}"}],
        },
    )
    plain = create(client, {"resourceType": "Patient", "name": [{"family": f"Smith{uid}"}]})
    assert found(client, "/Patient", {"family": f"smith\\,jones{uid}"}) == {comma}
    # unescaped, the comma separates two alternatives: 'smith' (no match) OR 'jones...' (no match)
    assert found(client, "/Patient", {"family": f"smith{uid},jones{uid}"}) == {plain}
    assert found(client, "/Patient", {"identifier": f"urn:test|{uid}\\,x\\|y"}) == {comma}
    assert found(client, "/Patient", {"identifier": f"urn:test|{uid}"}) == set()


def test_escaped_dollar_in_a_composite_component(client, uid):
    s = f"urn:codes:{uid}"
    odd = create(client, observation(s, "a$b", valueQuantity=quantity(3)))
    assert found(client, "/Observation", {"code-value-quantity": f"{s}|a\\$b$3"}) == {odd}
    assert found(client, "/Observation", {"code-value-quantity": f"{s}|a\\$b$4"}) == set()


def test_composite_rows_only_for_elements_with_every_component():
    """A composite search names every component and matches them within one element, so an element lacking one
    (this Observation's code beside a valueQuantity, for code-value-concept) gets no rows at all."""
    from fhir_server.search.indexer import SearchIndexer
    from fhir_server.search.registry import default_registry

    s = "urn:codes:composite-rows"
    resource = observation(
        s,
        "total",
        valueQuantity=quantity(30),
        component=[
            {"code": {"coding": [coding(s, "item")]}, "valueQuantity": quantity(7)},
            {"code": {"coding": [coding(s, "series")]}, "valueString": "self"},
        ],
    )
    rows = SearchIndexer(default_registry()).index_rows("Observation", resource)
    params = {row["param"] for table in rows.values() for row in table}
    assert {"code-value-quantity#0", "code-value-quantity#1"} <= params
    assert not {p for p in params if p.startswith(("code-value-concept", "code-value-string", "code-value-date"))}
    assert not {p for p in params if p.startswith("component-code-value-concept")}
    # the component with a quantity has both parts; the one with a string has none
    component_codes = [r["code"] for r in rows["token"] if r["param"] == "component-code-value-quantity#0"]
    assert component_codes == ["item"]


def test_a_number_beyond_a_double_is_refused_in_a_body_and_in_a_search(client, uid):
    """1e400 has no double (the index and its JSON transport would see infinity): a body carrying it and a search
    for it are both a clear 400, and nothing is stored."""
    s = f"urn:codes:{uid}:huge"
    code = json.dumps({"coding": [{"system": s, "code": "x"}]})
    body = '{"resourceType": "Observation", "status": "final", "code": ' + code + ", "
    body += '"valueQuantity": {"value": 1e400, "unit": "mg"}}'
    created = client.post("/Observation", content=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 400, created.text
    assert "out of range" in created.json()["issue"][0]["diagnostics"]
    assert found(client, "/Observation", {"code": f"{s}|x"}) == set()
    for param in ("value-quantity", "component-value-quantity"):
        refused = client.get("/Observation", params={param: "1" + "0" * 400})
        assert refused.status_code == 400, refused.text
        assert "beyond the range" in refused.json()["issue"][0]["diagnostics"]

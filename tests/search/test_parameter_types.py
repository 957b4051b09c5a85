"""FHIR R4 §3.1.1.4 search parameter types: token, string, date, number and quantity,
with the §3.1.1.5 modifiers (:text :not :missing :exact :contains :of-type) and prefixes (eq ne gt lt ge le sa eb ap)
that apply to them, and the precision rules (a date or a number covers the range its precision implies).

Reference, uri and composite parameters, and the OR/AND/escaping rules, are in test_references_and_composites.py.
"""

from __future__ import annotations

import pytest

from tests.search.helpers import coding, create, found, observation, quantity, ref, search

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


# -- token -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coded(shared_client, shared_uid):
    """Observations of one subject: S|a (display 'Alpha Beta', text 'Kappa'), S|b, a code without a system."""
    client, system = shared_client, f"urn:codes:{shared_uid}:coded"
    subject = create(client, {"resourceType": "Patient"})
    base = {"subject": ref("Patient", subject)}
    made = {
        "a": create(
            client,
            {
                **observation(system, **base),
                "code": {"coding": [coding(system, "a", "Alpha Beta")], "text": "Kappa Gamma"},
            },
        ),
        "b": create(client, observation(system, "b", **base)),
        "nosystem": create(
            client, {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "a"}]}, **base}
        ),
    }
    return system, subject, made


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{s}|a", {"a"}),  # system|code
        ("a", {"a", "nosystem"}),  # code in any system
        ("|a", {"nosystem"}),  # code with no system
        ("{s}|", {"a", "b"}),  # any code in the system
        ("{s}|c", set()),
        ("urn:other|a", set()),
    ],
)
def test_token_system_and_code_forms(shared_client, coded, value, expected):
    system, subject, made = coded
    matched = found(shared_client, "/Observation", {"subject": subject, "code": value.format(s=system)})
    assert matched == {made[name] for name in expected}


def test_token_text_modifier_matches_text_and_display_from_the_start(client, coded):
    _, subject, made = coded
    for text in ("kappa", "KAPPA gam", "alpha", "Alpha Be"):
        assert found(client, "/Observation", {"subject": subject, "code:text": text}) == {made["a"]}, text
    assert found(client, "/Observation", {"subject": subject, "code:text": "gamma"}) == set()


def test_token_not_modifier_keeps_resources_without_the_code(client, coded):
    system, subject, made = coded
    assert found(client, "/Observation", {"subject": subject, "code:not": f"{system}|a"}) == {
        made["b"],
        made["nosystem"],
    }


def test_token_missing_modifier(client, uid):
    ident = [{"system": "urn:test", "value": uid}]
    no_gender = create(client, {"resourceType": "Patient", "identifier": ident})
    female = create(client, {"resourceType": "Patient", "identifier": ident, "gender": "female"})
    scope = {"identifier": f"urn:test|{uid}"}
    assert found(client, "/Patient", {**scope, "gender:missing": "true"}) == {no_gender}
    assert found(client, "/Patient", {**scope, "gender:missing": "false"}) == {female}
    assert client.get("/Patient", params={**scope, "gender:missing": "maybe"}).status_code == 400


def test_identifier_tokens(client, uid):
    pid = create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
    assert found(client, "/Patient", {"identifier": f"urn:test|{uid}"}) == {pid}
    assert found(client, "/Patient", {"identifier": uid}) == {pid}
    assert found(client, "/Patient", {"identifier": f"|{uid}"}) == set()  # it has a system
    assert found(client, "/Patient", {"identifier": f"urn:other|{uid}"}) == set()


def test_identifier_of_type_modifier(client, uid):
    mrn = {"coding": [coding(V2_0203, "MR")]}
    pid = create(
        client,
        {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": uid, "type": mrn}]},
    )
    assert found(client, "/Patient", {"identifier:of-type": f"{V2_0203}|MR|{uid}"}) == {pid}
    assert found(client, "/Patient", {"identifier:of-type": f"{V2_0203}|SS|{uid}"}) == set()
    assert found(client, "/Patient", {"identifier:of-type": f"{V2_0203}|MR|other{uid}"}) == set()
    assert client.get("/Patient", params={"identifier:of-type": f"MR|{uid}"}).status_code == 400


def test_boolean_token(client, uid):
    ident = [{"system": "urn:test", "value": uid}]
    active = create(client, {"resourceType": "Patient", "identifier": ident, "active": True})
    inactive = create(client, {"resourceType": "Patient", "identifier": ident, "active": False})
    unknown = create(client, {"resourceType": "Patient", "identifier": ident})
    scope = {"identifier": f"urn:test|{uid}"}
    assert found(client, "/Patient", {**scope, "active": "true"}) == {active}
    assert found(client, "/Patient", {**scope, "active": "false"}) == {inactive}
    assert found(client, "/Patient", {**scope, "active:not": "true"}) == {inactive, unknown}


# -- string ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def muller(shared_client, shared_uid):
    client, uid = shared_client, f"{shared_uid}-muller"
    pid = create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test", "value": uid}],
            "name": [
                {"family": "Müller", "given": ["Jürgen", "Karl"], "prefix": ["Dr"]},
                {"family": "van der Berg-Öztürk", "given": ["  Anna"]},
            ],
            "address": [{"line": ["12 Bahnhofstraße"], "city": "Zürich", "postalCode": "8001", "country": "CH"}],
        },
    )
    return {"identifier": f"urn:test|{uid}"}, pid


@pytest.mark.parametrize(
    ("param", "value", "matches"),
    [
        ("family", "muller", True),  # accents and case do not matter
        ("family", "MÜL", True),  # starts-with by default
        ("family", "uller", False),  # ... not contains
        ("family:exact", "Müller", True),
        ("family:exact", "muller", False),
        ("family:exact", "Müll", False),
        ("family:contains", "LLE", True),
        ("family:contains", "xyz", False),
        ("given", "karl", True),
        ("given", "jurg", True),
        ("name", "jurgen", True),  # name covers every part of the HumanName
        ("name", "dr", True),
        ("name", "muller", True),
        ("address", "zurich", True),  # address covers every part of the Address
        ("address", "12 bahnhof", True),
        ("address", "bahnhof", True),  # a word of it starts so (R4: a SHOULD for the parts of strings)
        ("address", "hofstr", False),  # ... but not the middle of a word
        ("address-city", "zur", True),
        ("address-city", "8001", False),
        ("address-postalcode", "800", True),
        ("address-country", "ch", True),
        ("family", "berg", True),  # a part of a family name (R4: a SHOULD)
        ("family", "der berg", True),
        ("family", "ozturk", True),  # after a hyphen
        ("family", "van der", True),
        ("family", "erg", False),
        ("family:exact", "Berg", False),  # :exact is the whole string
        ("family:exact", "van der Berg-Öztürk", True),
        ("given", "anna", True),  # leading whitespace ignored (R4: a SHOULD)
    ],
)
def test_string_matching(shared_client, muller, param, value, matches):
    scope, pid = muller
    assert found(shared_client, "/Patient", {**scope, param: value}) == ({pid} if matches else set())


def test_a_string_sorts_by_the_whole_string_not_by_its_word_starts(client, uid):
    ident = [{"system": "urn:test", "value": uid}]
    for family in ("Zeta Alpha", "Beta", "Mid"):
        create(client, {"resourceType": "Patient", "identifier": ident, "name": [{"family": family}]})
    for sort, expected in (("family", ["Beta", "Mid", "Zeta Alpha"]), ("-family", ["Zeta Alpha", "Mid", "Beta"])):
        bundle = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_sort": sort}).json()
        assert [e["resource"]["name"][0]["family"] for e in bundle["entry"]] == expected, sort


def test_string_rejects_an_unknown_modifier(client, muller):
    scope, _ = muller
    response = client.get("/Patient", params={**scope, "family:below": "mul"})
    assert response.status_code == 400 and "family" in response.text


# -- date ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dated(shared_client, shared_uid):
    client, system = shared_client, f"urn:codes:{shared_uid}:dated"
    made = {
        "end-of-march": create(client, observation(system, effectiveDateTime="2026-03-31T23:59:59Z")),
        "april": create(client, observation(system, effectiveDateTime="2026-04-01T00:00:00Z")),
        "period": create(client, observation(system, effectivePeriod={"start": "2026-03-10", "end": "2026-03-20"})),
    }
    return system, made


def test_a_month_covers_its_last_second_and_not_the_next_month(client, dated):
    """REQUIRED: date=2026-03 matches 2026-03-31T23:59:59Z and not 2026-04-01T00:00:00Z."""
    system, made = dated
    matched = found(client, "/Observation", {"code": f"{system}|a", "date": "2026-03"})
    assert made["end-of-march"] in matched
    assert made["april"] not in matched


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03", {"end-of-march", "period"}),
        ("eq2026-03", {"end-of-march", "period"}),
        ("2026-03-15", set()),  # the period is not inside the day
        ("2026-03-31T23:59:59Z", {"end-of-march"}),
        ("2026-04-01T01:00:00+01:00", {"april"}),  # offsets are honoured
        ("ne2026-03", {"april"}),
        ("gt2026-03", {"april"}),
        ("gt2026-03-15", {"end-of-march", "april", "period"}),  # the period ends after the 15th
        ("lt2026-04", {"end-of-march", "period"}),
        ("lt2026-03-15", {"period"}),
        ("ge2026-03-20", {"end-of-march", "april"}),
        ("ge2026-04-01", {"april"}),
        ("le2026-03-11", {"period"}),
        ("le2026-03-31", {"end-of-march", "period"}),
        ("sa2026-03-05", {"end-of-march", "april", "period"}),
        ("sa2026-03-15", {"end-of-march", "april"}),  # the period starts before the 15th ends
        ("sa2026-03-31T23:59:59Z", {"april"}),
        ("eb2026-03-25", {"period"}),
        ("eb2026-04", {"end-of-march", "period"}),
    ],
)
def test_date_prefixes(shared_client, dated, value, expected):
    system, made = dated
    assert found(shared_client, "/Observation", {"code": f"{system}|a", "date": value}) == {
        made[name] for name in expected
    }


def test_date_approximately(client, dated):
    """ap: the server chooses the margin; a day either side of the value is certainly within it, 36 years not."""
    system, made = dated
    near = found(client, "/Observation", {"code": f"{system}|a", "date": "ap2026-03-31"})
    assert {made["end-of-march"], made["april"]} <= near
    assert found(client, "/Observation", {"code": f"{system}|a", "date": "ap1990-01-01"}) == set()


def test_date_on_a_plain_date_element(client, uid):
    ident = [{"system": "urn:test", "value": uid}]
    born = create(client, {"resourceType": "Patient", "identifier": ident, "birthDate": "2012-05-01"})
    older = create(client, {"resourceType": "Patient", "identifier": ident, "birthDate": "1970"})
    scope = {"identifier": f"urn:test|{uid}"}
    assert found(client, "/Patient", {**scope, "birthdate": "2012"}) == {born}
    assert found(client, "/Patient", {**scope, "birthdate": "1970-06"}) == set()  # 1970 is not inside June
    assert found(client, "/Patient", {**scope, "birthdate": "ge2010"}) == {born}
    assert found(client, "/Patient", {**scope, "birthdate": "lt1971"}) == {older}
    both = [("identifier", f"urn:test|{uid}"), ("birthdate", "ge1970"), ("birthdate", "lt2013")]
    assert found(client, "/Patient", both) == {born, older}  # repeated parameters AND together


@pytest.mark.parametrize("value", ["2026-13", "2026-02-30", "xx2026", "gt", "26-01-01", "2026-01-01T25:00:00Z"])
def test_malformed_dates_are_refused_naming_the_parameter(shared_client, uid, value):
    response = shared_client.get("/Observation", params={"code": f"urn:codes:{uid}|a", "date": value})
    assert response.status_code == 400
    assert "'date'" in response.json()["issue"][0]["diagnostics"]


# -- number and quantity ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def risks(shared_client):
    subject = ref("Patient", create(shared_client, {"resourceType": "Patient"}))
    made = {
        p: create(
            shared_client,
            {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": subject,
                "prediction": [{"probabilityDecimal": p}],
            },
        )
        for p in (0.2, 0.55, 0.9)
    }
    return subject["reference"], made


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.55", {0.55}),
        ("0.5", set()),  # 0.5 means [0.45, 0.55)
        ("0.6", {0.55}),  # [0.55, 0.65)
        ("0.550", {0.55}),
        ("gt0.5", {0.55, 0.9}),
        ("ge0.9", {0.9}),
        ("lt0.5", {0.2}),
        ("le0.2", {0.2}),
        ("ne0.55", {0.2, 0.9}),
        ("sa0.55", {0.9}),
        ("eb0.55", {0.2}),
        ("ap0.55", {0.55}),
        ("0.2,0.9", {0.2, 0.9}),
    ],
)
def test_number_prefixes_and_precision(shared_client, risks, value, expected):
    subject, made = risks
    assert found(shared_client, "/RiskAssessment", {"subject": subject, "probability": value}) == {
        made[p] for p in expected
    }


@pytest.fixture(scope="module")
def weighed(shared_client, shared_uid):
    client, system = shared_client, f"urn:codes:{shared_uid}:weighed"
    made = {
        "5.4mg": create(client, observation(system, valueQuantity=quantity(5.4))),
        "99.5mg": create(client, observation(system, valueQuantity=quantity(99.5))),
        "100.4mg": create(client, observation(system, valueQuantity=quantity(100.4))),
        "100.5mg": create(client, observation(system, valueQuantity=quantity(100.5))),
        "100g": create(client, observation(system, valueQuantity=quantity(100, "g"))),
        "7tabs": create(client, observation(system, valueQuantity={"value": 7, "unit": "tabs", "system": "urn:local"})),
        "80kg": create(client, observation(system, valueQuantity={"value": 80, "unit": "kilogram", "code": "kg",
                                                                  "system": "http://unitsofmeasure.org"})),
    }  # fmt: skip
    return system, made


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5.4|http://unitsofmeasure.org|mg", {"5.4mg"}),
        ("5.4||mg", {"5.4mg"}),  # any system
        ("5.40|http://unitsofmeasure.org|mg", {"5.4mg"}),
        ("5.4|urn:other|mg", set()),
        ("5.4|http://unitsofmeasure.org|g", set()),
        ("100", {"99.5mg", "100.4mg", "100g"}),  # 100 means [99.5, 100.5)
        ("100||mg", {"99.5mg", "100.4mg"}),
        ("100.0", {"100g"}),  # [99.95, 100.05)
        ("gt100", {"100.4mg", "100.5mg"}),
        ("ge100.5", {"100.5mg"}),
        ("lt99.6", {"5.4mg", "99.5mg", "7tabs", "80kg"}),
        ("le5.4", {"5.4mg"}),
        ("ne100||mg", {"5.4mg", "100.5mg"}),
        ("sa100.4", {"100.5mg"}),
        ("eb6", {"5.4mg"}),
        ("gt5|http://unitsofmeasure.org|mg", {"5.4mg", "99.5mg", "100.4mg", "100.5mg"}),
        ("7||tabs", {"7tabs"}),  # the unit stands in for a missing code
        ("80||kilogram", {"80kg"}),  # without a system: the code or the stated human unit (R4)
        ("80||kg", {"80kg"}),
        ("80|http://unitsofmeasure.org|kilogram", set()),  # with one: the system's code only
        ("80|http://unitsofmeasure.org|kg", {"80kg"}),
    ],
)
def test_quantity_prefixes_units_and_precision(shared_client, weighed, value, expected):
    system, made = weighed
    assert found(shared_client, "/Observation", {"code": f"{system}|a", "value-quantity": value}) == {
        made[name] for name in expected
    }


@pytest.mark.parametrize("value", ["abc", "gt", "zz5", "1|2", "5|a|b|c", "5e", "NaN", "Infinity"])
def test_malformed_quantities_are_refused_naming_the_parameter(shared_client, uid, value):
    response = shared_client.get("/Observation", params={"code": f"urn:codes:{uid}|a", "value-quantity": value})
    assert response.status_code == 400, response.text
    assert "value-quantity" in response.json()["issue"][0]["diagnostics"]


def test_an_updated_resource_is_found_by_its_new_values_only(client, uid):
    system = f"urn:codes:{uid}"
    resource = observation(system, "old")
    rid = create(client, resource)
    response = client.put(
        f"/Observation/{rid}",
        json={**resource, "id": rid, "code": {"coding": [coding(system, "new")]}},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    assert found(client, "/Observation", {"code": f"{system}|old"}) == set()
    assert found(client, "/Observation", {"code": f"{system}|new"}) == {rid}
    assert search(client, "/Observation", {"code": f"{system}|new", "_total": "accurate"})["total"] == 1

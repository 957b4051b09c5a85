"""FHIR R4 §3.1.1.6 chained parameters (``subject:Patient.birthdate``) and reverse chaining (``_has``), and the
result parameters _include / _revinclude with :iterate (§3.1.1.5 "Including other resources in results"): what is
included, with which search.mode, exactly once."""

from __future__ import annotations

import pytest

from tests.search.helpers import coding, create, entries, found, ids, observation, outcome_entries, ref, search


@pytest.fixture(scope="module")
def world(shared_client, shared_uid):
    """Top <-partOf- Org <-managingOrganization- Kid (born 2012, GP Doc) and Old (born 1970), and Observations:
    kid_a (subject Kid, code a, encounter, performer Doc), old_a (subject Old, code a, performer Org),
    kid_b (subject Kid, code b, hasMember kid_a)."""
    client, uid = shared_client, shared_uid
    s = f"urn:codes:{uid}:chain"
    ident = [{"system": "urn:test", "value": uid}]
    w = {"s": s, "uid": uid}
    w["top"] = create(client, {"resourceType": "Organization", "name": f"Top{uid}"})
    w["org"] = create(
        client, {"resourceType": "Organization", "name": f"Org{uid}", "partOf": ref("Organization", w["top"])}
    )
    w["doc"] = create(client, {"resourceType": "Practitioner", "name": [{"family": f"Doc{uid}"}]})
    w["kid"] = create(
        client,
        {
            "resourceType": "Patient",
            "identifier": ident,
            "name": [{"family": f"Kid{uid}"}],
            "birthDate": "2012-05-01",
            "managingOrganization": ref("Organization", w["org"]),
            "generalPractitioner": [ref("Practitioner", w["doc"])],
        },
    )
    w["old"] = create(
        client, {"resourceType": "Patient", "identifier": ident, "name": [{"family": f"Old{uid}"}], "birthDate": "1970"}
    )
    w["enc"] = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"),
            "subject": ref("Patient", w["kid"]),
        },
    )
    kid, old = ref("Patient", w["kid"]), ref("Patient", w["old"])
    w["kid_a"] = create(
        client,
        observation(s, subject=kid, encounter=ref("Encounter", w["enc"]), performer=[ref("Practitioner", w["doc"])]),
    )
    w["old_a"] = create(client, observation(s, subject=old, performer=[ref("Organization", w["org"])]))
    w["kid_b"] = create(client, observation(s, "b", subject=kid, hasMember=[ref("Observation", w["kid_a"])]))
    return w


def _obs(w, **params):
    return {"code": f"{w['s']}|a,{w['s']}|b", **params}


# -- chained parameters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("subject:Patient.birthdate", "ge2010", {"kid_a", "kid_b"}),
        ("subject.birthdate", "ge2010", {"kid_a", "kid_b"}),
        ("subject:Patient.birthdate", "lt2010", {"old_a"}),
        ("subject.name", "kid{uid}", {"kid_a", "kid_b"}),
        ("patient.identifier", "urn:test|{uid}", {"kid_a", "kid_b", "old_a"}),
        # performer may be a Practitioner, an Organization, a Patient ...: the chain tries each
        ("performer.name", "doc{uid}", {"kid_a"}),
        ("performer.name", "org{uid}", {"old_a"}),
        ("performer:Organization.name", "doc{uid}", set()),
        ("performer:Practitioner.name", "doc{uid}", {"kid_a"}),
        ("subject:Patient.organization.name", "org{uid}", {"kid_a", "kid_b"}),
        ("subject:Patient.organization.partof.name", "top{uid}", {"kid_a", "kid_b"}),  # three links deep
        ("encounter.subject:Patient.name", "kid{uid}", {"kid_a"}),
    ],
)
def test_chains(shared_client, world, param, value, expected):
    value = value.format(uid=world["uid"])
    assert found(shared_client, "/Observation", _obs(world, **{param: value})) == {world[n] for n in expected}


def test_one_chain_reaches_every_type_the_reference_may_point_at(shared_client, world):
    """Observation.subject may be a Patient, Group, Device or Location: subject.name finds a Patient's and a
    Location's name alike."""
    s, uid = world["s"], world["uid"]
    ward = create(shared_client, {"resourceType": "Location", "name": f"Ward{uid}"})
    warden = create(shared_client, {"resourceType": "Patient", "name": [{"family": f"Ward{uid}en"}]})
    at_ward = create(shared_client, observation(s, "w", subject=ref("Location", ward)))
    of_warden = create(shared_client, observation(s, "w", subject=ref("Patient", warden)))
    code = {"code": f"{s}|w"}
    assert found(shared_client, "/Observation", {**code, "subject.name": f"ward{uid}"}) == {at_ward, of_warden}
    assert found(shared_client, "/Observation", {**code, "subject.name": f"ward{uid}en"}) == {of_warden}
    assert found(shared_client, "/Observation", {**code, "subject:Location.name": f"ward{uid}"}) == {at_ward}


def test_chains_deeper_than_three_links_are_refused(shared_client, world):
    deep = "subject:Patient.organization.partof.partof.name"
    response = shared_client.get("/Observation", params=_obs(world, **{deep: "top"}))
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize(
    "param",
    [
        "code.name",  # not a reference parameter
        "subject:Nonsense.name",  # not a resource type
    ],
)
def test_impossible_chains_are_refused(shared_client, world, param):
    response = shared_client.get("/Observation", params=_obs(world, **{param: "x"}))
    assert response.status_code == 400, response.text


def test_a_chain_to_an_unknown_parameter_is_reported_or_refused_under_strict(shared_client, world):
    params = _obs(world, **{"subject:Patient.nonsense": "x"})
    bundle = search(shared_client, "/Observation", params)
    assert set(ids(bundle)) == {world[n] for n in ("kid_a", "kid_b", "old_a")}  # ignored, as the spec allows
    assert "subject:Patient.nonsense" in str(outcome_entries(bundle))
    assert shared_client.get("/Observation", params=params, headers={"Prefer": "handling=strict"}).status_code == 400


# -- reverse chaining ------------------------------------------------------------------------------------------
def _patients(w, *pairs):
    return [("identifier", f"urn:test|{w['uid']}"), *pairs]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("_has:Observation:patient:code", "{s}|b")], {"kid"}),
        ([("_has:Observation:patient:code", "{s}|a")], {"kid", "old"}),
        ([("_has:Observation:subject:performer", "Organization/{org}")], {"old"}),
        ([("_has:Observation:patient:code", "{s}|zzz")], set()),
        # repeated: both must hold, possibly through different Observations
        ([("_has:Observation:patient:code", "{s}|a"), ("_has:Observation:patient:code", "{s}|b")], {"kid"}),
        (
            [("_has:Observation:patient:code", "{s}|b"), ("_has:Observation:patient:performer", "Organization/{org}")],
            set(),
        ),
        # nested: a Patient with an Encounter that an Observation with code a points at
        ([("_has:Encounter:patient:_has:Observation:encounter:code", "{s}|a")], {"kid"}),
        ([("_has:Encounter:patient:_has:Observation:encounter:code", "{s}|b")], set()),
        # a chain inside _has
        ([("_has:Observation:patient:performer:Practitioner.name", "doc{uid}")], {"kid"}),
    ],
)
def test_has(shared_client, world, pairs, expected):
    pairs = [(k, v.format(**world)) for k, v in pairs]
    assert found(shared_client, "/Patient", _patients(world, *pairs)) == {world[n] for n in expected}


def test_has_nesting_is_capped(shared_client, world):
    deep = "_has:Observation:patient" + ":_has:Observation:has-member" * 3 + ":code"  # four _has deep
    response = shared_client.get("/Patient", params=_patients(world, (deep, "urn:x|a")))
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize("key", ["_has:Observation:patient", "_has:Nonsense:patient:code", "_has:Observation"])
def test_malformed_has_is_refused(shared_client, world, key):
    assert shared_client.get("/Patient", params=_patients(world, (key, "urn:x|a"))).status_code == 400


# -- _include and _revinclude ----------------------------------------------------------------------------------
def _kinds(bundle):
    return {(t, i, m) for t, i, m in entries(bundle) if m != "outcome"}


def test_include_adds_the_referenced_resources_once_with_mode_include(shared_client, world):
    bundle = search(shared_client, "/Observation", _obs(world, _include="Observation:subject"))
    w = world
    assert _kinds(bundle) == {
        ("Observation", w["kid_a"], "match"),
        ("Observation", w["kid_b"], "match"),
        ("Observation", w["old_a"], "match"),
        ("Patient", w["kid"], "include"),
        ("Patient", w["old"], "include"),
    }
    assert len(entries(bundle)) == 5  # Kid is the subject of two matches but appears once
    assert bundle.get("total", 3) == 3  # included resources are not counted


def test_include_with_a_target_type(shared_client, world):
    w = world
    bundle = search(shared_client, "/Observation", _obs(w, _include="Observation:performer:Organization"))
    assert ids(bundle, "include") == [w["org"]]
    bundle = search(shared_client, "/Observation", _obs(w, _include="Observation:performer:Practitioner"))
    assert ids(bundle, "include") == [w["doc"]]


def test_include_follows_only_the_page_it_is_on(shared_client, world):
    w = world
    bundle = search(shared_client, "/Observation", {"_id": w["old_a"], "_include": "Observation:subject"})
    assert ids(bundle, "include") == [w["old"]]


def test_a_match_is_not_repeated_as_an_include(shared_client, world):
    w = world
    bundle = search(shared_client, "/Observation", _obs(w, _include="Observation:has-member"))
    assert sorted(ids(bundle)) == sorted([w["kid_a"], w["kid_b"], w["old_a"]])
    assert ids(bundle, "include") == []  # kid_a, the member, is already a match


def test_revinclude(shared_client, world):
    w = world
    bundle = search(shared_client, "/Patient", {"_id": w["kid"], "_revinclude": "Observation:subject"})
    assert ids(bundle) == [w["kid"]]
    assert set(ids(bundle, "include")) == {w["kid_a"], w["kid_b"]}


def test_include_iterate_follows_included_resources(shared_client, world):
    w = world
    params = [("_id", w["kid_a"]), ("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")]
    assert set(ids(search(shared_client, "/Observation", params), "include")) == {w["kid"], w["org"]}
    params += [("_include:iterate", "Organization:partof"), ("_include:iterate", "Patient:general-practitioner")]
    assert set(ids(search(shared_client, "/Observation", params), "include")) == {
        w["kid"],
        w["org"],
        w["top"],
        w["doc"],
    }


def test_include_without_iterate_applies_to_matches_only(shared_client, world):
    w = world
    params = [("_id", w["kid_a"]), ("_include", "Observation:subject"), ("_include", "Patient:organization")]
    assert ids(search(shared_client, "/Observation", params), "include") == [w["kid"]]


def test_revinclude_iterate(shared_client, world):
    w = world
    params = [("_id", w["top"]), ("_revinclude:iterate", "Organization:partof")]
    assert ids(search(shared_client, "/Organization", params), "include") == [w["org"]]
    params.append(("_revinclude:iterate", "Patient:organization"))
    assert set(ids(search(shared_client, "/Organization", params), "include")) == {w["org"], w["kid"]}
    params.append(("_revinclude:iterate", "Observation:subject"))
    assert set(ids(search(shared_client, "/Organization", params), "include")) == {
        w["org"],
        w["kid"],
        w["kid_a"],
        w["kid_b"],
    }


def test_include_everything_with_a_wildcard(shared_client, world):
    w = world
    bundle = search(shared_client, "/Observation", {"_id": w["kid_a"], "_include": "*"})
    assert _kinds(bundle) == {
        ("Observation", w["kid_a"], "match"),
        ("Patient", w["kid"], "include"),
        ("Encounter", w["enc"], "include"),
        ("Practitioner", w["doc"], "include"),
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("_include", "Observation:nonsense"),  # unknown parameter
        ("_include", "Observation:code"),  # not a reference parameter
        ("_include", "Nonsense:subject"),
        ("_include", "Observation:subject:Nonsense"),
        ("_include", "Observation"),
        ("_revinclude", "Observation:nonsense"),
        ("_include:sideways", "Observation:subject"),
    ],
)
def test_unknown_includes_are_refused(shared_client, world, key, value):
    response = shared_client.get("/Observation", params=_obs(world, **{key: value}))
    assert response.status_code == 400, response.text


def test_the_number_of_includes_is_capped(shared_client, world):
    many = [("_include", "Observation:subject")] * 11
    response = shared_client.get("/Observation", params=[("_id", world["kid_a"]), *many])
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_include_follows_a_canonical_reference_to_that_version_or_the_newest(client, uid):
    """QuestionnaireResponse:questionnaire is a canonical: ``url|version`` includes that version, a bare ``url``
    the newest held (as the server resolves a response's Questionnaire)."""
    url = f"http://example.org/Questionnaire/{uid}"
    made = {}
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        item = [{"linkId": "a", "type": "string", "text": "A"}]
        questionnaire = {"resourceType": "Questionnaire", "url": url, "version": version, "status": "active"}
        made[version] = create(client, {**questionnaire, "item": item})
    answered = {}
    for canonical in (f"{url}|1.9.0", url):
        answered[canonical] = create(client, {"resourceType": "QuestionnaireResponse", "questionnaire": canonical,
                                              "status": "in-progress"})  # fmt: skip
    for canonical, expected in ((f"{url}|1.9.0", "1.9.0"), (url, "1.10.0")):
        bundle = search(client, "/QuestionnaireResponse",
                        {"_id": answered[canonical], "_include": "QuestionnaireResponse:questionnaire"})  # fmt: skip
        included = [(kind, found_id) for kind, found_id, mode in entries(bundle) if mode == "include"]
        assert included == [("Questionnaire", made[expected])], canonical


def test_revinclude_follows_canonical_references_back(client, uid):
    """The same rule the other way: a Questionnaire revincludes the responses naming it by ``url|version``, and the
    newest version also those naming the bare ``url``."""
    url = f"http://example.org/Questionnaire/{uid}"
    item = [{"linkId": "a", "type": "string", "text": "A"}]
    made = {
        version: create(client, {"resourceType": "Questionnaire", "url": url, "version": version, "status": "active",
                                 "item": item})
        for version in ("1.9.0", "1.10.0")
    }  # fmt: skip
    answers = {
        canonical: create(client, {"resourceType": "QuestionnaireResponse", "questionnaire": canonical,
                                   "status": "in-progress"})
        for canonical in (f"{url}|1.9.0", f"{url}|1.10.0", url)
    }  # fmt: skip
    expected = {"1.9.0": {answers[f"{url}|1.9.0"]}, "1.10.0": {answers[f"{url}|1.10.0"], answers[url]}}
    for version, responses in expected.items():
        bundle = search(client, "/Questionnaire",
                        {"_id": made[version], "_revinclude": "QuestionnaireResponse:questionnaire"})  # fmt: skip
        included = {found_id for kind, found_id, mode in entries(bundle) if mode == "include"}
        assert included == responses, version

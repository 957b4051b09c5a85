"""Search as FHIR R4 (search.html) says, where issue 23 (point 3) found us apart from a widely used peer: a quantity's
stated unit, empty parameters, ``_count=0``, the words of a string and its leading whitespace, and canonical
references (versions and ``:below``, ``_include``, ``:missing``).  Each runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.search.helpers import UCUM, create, entries, found, observation, search

KILOGRAM = {"value": 100, "unit": "kilogram", "system": UCUM, "code": "kg"}


@pytest.fixture(scope="module")
def weighed(shared_client, shared_uid):
    """An Observation whose Quantity has both a code (kg) and a different stated unit (kilogram)."""
    system = f"urn:codes:{shared_uid}:r4-quantity"
    made = {
        "kg": create(shared_client, observation(system, valueQuantity=KILOGRAM)),
        "pounds": create(shared_client, observation(system, valueQuantity={"value": 100, "unit": "lb"})),
    }
    return system, made


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100||kilogram", {"kg"}),  # R4: without a system, "either the code or the stated human unit"
        ("100||kg", {"kg"}),
        ("100||lb", {"pounds"}),  # a unit without a code
        (f"100|{UCUM}|kg", {"kg"}),
        (f"100|{UCUM}|kilogram", set()),  # with a system, the system's code only
        ("ne100||kilogram", set()),
        ("gt99||kilogram", {"kg"}),
    ],
)
def test_a_quantity_matches_its_stated_unit_when_it_has_a_code(shared_client, weighed, value, expected):
    system, made = weighed
    assert found(shared_client, "/Observation", {"code": f"{system}|a", "value-quantity": value}) == {
        made[name] for name in expected
    }


def test_a_composite_quantity_matches_its_stated_unit_too(shared_client, weighed):
    system, made = weighed
    params = {"code-value-quantity": f"{system}|a$100||kilogram"}
    assert found(shared_client, "/Observation", params) == {made["kg"]}


# -- empty parameters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "empty",
    ["family", "birthdate", "gender", "general-practitioner", "_id", "family:exact", "organization.name", "_sort"],
)
def test_an_empty_parameter_is_ignored(shared_client, shared_uid, empty):
    """R4 (search.html#errors): "Empty parameters are not an error - they are just ignored"."""
    patient = create(
        shared_client, {"resourceType": "Patient", "identifier": [{"system": "urn:r4", "value": shared_uid}]}
    )
    scope = {"identifier": f"urn:r4|{shared_uid}"}
    assert patient in found(shared_client, "/Patient", [*scope.items(), (empty, "")])


# -- _count=0 ----------------------------------------------------------------------------------------------------
def test_count_zero_is_a_count(shared_client, shared_uid):
    """R4 (search.html#count): "_count=0 ... should be treated as _summary=count": the total and no entries."""
    system = f"urn:codes:{shared_uid}:r4-count"
    for _ in range(3):
        create(shared_client, observation(system))
    bundle = search(shared_client, "/Observation", {"code": f"{system}|a", "_count": "0"})
    assert bundle["total"] == 3
    assert bundle.get("entry", []) == []


# -- strings -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def named(shared_client, shared_uid):
    def patient(family):
        return create(shared_client, {"resourceType": "Patient", "name": [{"family": family}],
                                      "identifier": [{"system": "urn:r4-names", "value": shared_uid}]})  # fmt: skip

    return {"vanderberg": patient("van der Berg"), "padded": patient("  Smith"), "hyphen": patient("Lloyd-Jones")}


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("family", "berg", {"vanderberg"}),  # a part of the name (R4: a SHOULD)
        ("family", "der", {"vanderberg"}),
        ("family", "van der", {"vanderberg"}),
        ("family", "jones", {"hyphen"}),
        ("family", "erg", set()),  # the start of a word, not any substring
        ("family:contains", "erg", {"vanderberg"}),
        ("family", "smith", {"padded"}),  # leading whitespace ignored (R4: a SHOULD)
        ("family:exact", "Berg", set()),  # :exact is the whole string
        ("family:exact", "van der Berg", {"vanderberg"}),
    ],
)
def test_strings_match_each_word_and_ignore_leading_whitespace(
    shared_client, shared_uid, named, param, value, expected
):
    scope = {"identifier": f"urn:r4-names|{shared_uid}"}
    assert found(shared_client, "/Patient", {**scope, param: value}) == {named[n] for n in expected}


def test_sorting_by_a_string_reads_whole_strings_without_leading_whitespace(shared_client, shared_uid, named):
    scope = {"identifier": f"urn:r4-names|{shared_uid}", "_sort": "family"}
    ids = [entry[1] for entry in entries(search(shared_client, "/Patient", scope))]
    assert ids == [named["hyphen"], named["padded"], named["vanderberg"]]


ITEM = [{"linkId": "a", "type": "string", "text": "A"}]


def _questionnaire_versions(client, url: str) -> dict[str, str]:
    """One Questionnaire url in versions 1.0.0, 1.2.0 and 10.0.0 (ids by version)."""
    return {
        version: create(client, {"resourceType": "Questionnaire", "url": url, "version": version,
                                 "status": "active", "item": ITEM})
        for version in ("1.0.0", "1.2.0", "10.0.0")
    }  # fmt: skip


# -- canonical references --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def answered(shared_client, shared_uid):
    """QuestionnaireResponses naming one Questionnaire's canonical with several versions, and without one."""
    url = f"http://example.org/r4/{shared_uid}/Questionnaire/phq9"
    questionnaires = _questionnaire_versions(shared_client, url)
    forms = {"bare": url, "v1.0.0": f"{url}|1.0.0", "v1.2.0": f"{url}|1.2.0", "v10": f"{url}|10.0.0",
             "other": f"{url}-other|1.0.0"}  # fmt: skip
    made = {
        name: create(shared_client, {"resourceType": "QuestionnaireResponse", "questionnaire": canonical,
                                     "status": "in-progress"})
        for name, canonical in forms.items()
    }  # fmt: skip
    return url, made, questionnaires


@pytest.mark.parametrize(
    ("param", "suffix", "expected"),
    [
        ("questionnaire", "", {"bare", "v1.0.0", "v1.2.0", "v10"}),  # no version: any version
        ("questionnaire", "|1.2.0", {"v1.2.0"}),  # a version: that version only
        ("questionnaire", "|1", set()),
        ("questionnaire:below", "|1", {"v1.0.0", "v1.2.0"}),  # :below on the version: 1, 1.x, 1.x.y (not 10)
        ("questionnaire:below", "|1.2", {"v1.2.0"}),
        ("questionnaire:below", "|1.2.0", {"v1.2.0"}),
        ("questionnaire:below", "|2", set()),
        ("questionnaire:below", "", {"bare", "v1.0.0", "v1.2.0", "v10"}),  # no version: any version
    ],
)
def test_canonical_search_by_version_and_below(shared_client, answered, param, suffix, expected):
    url, made, _ = answered
    assert found(shared_client, "/QuestionnaireResponse", {param: url + suffix}) == {made[n] for n in expected}


def test_below_needs_a_canonical_url(shared_client):
    response = shared_client.get("/QuestionnaireResponse", params={"questionnaire:below": "Questionnaire/x"})
    assert response.status_code == 400, response.text
    assert "questionnaire" in response.json()["issue"][0]["diagnostics"]


def test_include_follows_a_canonical_reference(shared_client, answered):
    _, made, questionnaires = answered
    for response, version in (("v1.2.0", "1.2.0"), ("bare", "10.0.0")):  # that version, or the newest held
        bundle = search(shared_client, "/QuestionnaireResponse",
                        {"_id": made[response], "_include": "QuestionnaireResponse:questionnaire"})  # fmt: skip
        included = [(kind, found_id) for kind, found_id, mode in entries(bundle) if mode == "include"]
        assert included == [("Questionnaire", questionnaires[version])], response


def test_an_identifier_only_reference_is_not_missing(shared_client, shared_uid):
    """R4: ``:missing=true`` matches where the element is absent; a Reference with only an identifier is there."""
    system = f"urn:codes:{shared_uid}:r4-missing"
    identified = create(shared_client, observation(system, subject={"identifier": {"system": "urn:x", "value": "1"}}))
    absent = create(shared_client, observation(system))
    scope = {"code": f"{system}|a"}
    assert found(shared_client, "/Observation", {**scope, "subject:missing": "true"}) == {absent}
    assert found(shared_client, "/Observation", {**scope, "subject:missing": "false"}) == {identified}


@pytest.fixture(scope="module")
def versions(shared_client, shared_uid):
    """One Questionnaire url in several versions (the version is its own element), and ConceptMaps whose source
    canonical carries the version inline."""
    url = f"http://example.org/r4/{shared_uid}/Questionnaire/gad7"
    made = _questionnaire_versions(shared_client, url)
    made["unversioned"] = create(shared_client, {"resourceType": "Questionnaire", "url": url, "status": "active",
                                                 "item": ITEM})  # fmt: skip
    maps = {
        version: create(shared_client, {"resourceType": "ConceptMap", "status": "draft",
                                        "sourceCanonical": f"{url}|{version}"})
        for version in ("1.0.0", "10.0.0")
    }  # fmt: skip
    return url, made, maps


@pytest.mark.parametrize(
    ("param", "suffix", "expected"),
    [
        ("url", "", {"1.0.0", "1.2.0", "10.0.0", "unversioned"}),  # no version: every version
        ("url", "|1.2.0", {"1.2.0"}),
        ("url", "|1", set()),
        ("url:below", "|1", {"1.0.0", "1.2.0"}),  # the version and those beneath it
        ("url:below", "|10", {"10.0.0"}),
    ],
)
def test_a_canonical_resources_url_with_a_version(shared_client, versions, param, suffix, expected):
    url, made, _ = versions
    assert found(shared_client, "/Questionnaire", {param: url + suffix}) == {made[v] for v in expected}


@pytest.mark.parametrize(
    ("param", "suffix", "expected"),
    [
        ("source-uri", "|1.0.0", {"1.0.0"}),  # a canonical held in a uri parameter, its version inline
        ("source-uri", "|1", set()),
        ("source-uri:below", "|1", {"1.0.0"}),
        ("source-uri:below", "", {"1.0.0", "10.0.0"}),
    ],
)
def test_a_canonical_with_its_version_inline(shared_client, versions, param, suffix, expected):
    url, _, maps = versions
    assert found(shared_client, "/ConceptMap", {param: url + suffix}) == {maps[v] for v in expected}


@pytest.mark.parametrize(("param", "value"), [("url:above", "http://x/a|1"), ("url", "http://x/a|"), ("url", "|1")])
def test_malformed_versioned_urls_are_refused(shared_client, param, value):
    response = shared_client.get("/Questionnaire", params={param: value})
    assert response.status_code == 400, response.text
    assert "url" in response.json()["issue"][0]["diagnostics"]

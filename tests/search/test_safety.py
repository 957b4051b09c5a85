"""FHIR R4 §3.1.1 search, its safety checklist and docs/security.md: client input in values, _sort, _include,
parameter names and paging cursors is a literal value or a 400 (never a 500, never SQL); no search path (parameters,
_include/_revinclude, _has, chains, compartments, $everything) returns a deleted resource; types and parameters that
do not exist are refused (400/404) or reported."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.search.helpers import create, entries, found, ids, observation, outcome_entries, ref, search

INJECTIONS = [
    "' OR '1'='1",
    "x'); DROP TABLE resources; --",
    '" OR 1=1 --',
    "%",
    "_",
    "%' OR '%'='",
    "\\",
    "*",
    '{"$gt": ""}',
    "1 UNION SELECT content FROM resources",
]


@pytest.fixture(scope="module")
def obrien(shared_client, shared_uid):
    uid = f"{shared_uid}-inj"
    pid = create(
        shared_client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test", "value": uid}],
            "name": [{"family": "O'Brien", "given": ["Ann_Marie"]}],
            "address": [{"city": "100% Town"}],
        },
    )
    return {"identifier": f"urn:test|{uid}"}, pid


def _never_500(response):
    assert response.status_code in (200, 400), f"{response.status_code} {response.text[:300]}"
    assert "Traceback" not in response.text
    return response


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize(
    "param",
    [
        "family",
        "family:contains",
        "family:exact",
        "name",
        "identifier",
        "_id",
        "general-practitioner",
        "birthdate",
        "_tag",
        "_profile",
        "address-city",
        "organization.name",
        "_has:Observation:patient:code",
    ],
)
def test_injection_in_values_is_a_literal_or_400(shared_client, obrien, param, value):
    scope, _ = obrien
    response = _never_500(shared_client.get("/Patient", params={**scope, param: value}))
    if response.status_code == 200:
        assert ids(response.json()) == []


def test_quotes_and_wildcards_are_literal(shared_client, obrien):
    scope, pid = obrien
    assert found(shared_client, "/Patient", {**scope, "family": "o'brien"}) == {pid}
    assert found(shared_client, "/Patient", {**scope, "given": "ann_m"}) == {pid}
    assert found(shared_client, "/Patient", {**scope, "given": "ann%"}) == set()
    assert found(shared_client, "/Patient", {**scope, "given": "annxmarie"}) == set()  # '_' is not a wildcard
    assert found(shared_client, "/Patient", {**scope, "address-city": "100%"}) == {pid}
    assert found(shared_client, "/Patient", {**scope, "address-city": "100x"}) == set()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("_sort", "family;DROP TABLE resources"),
        ("_sort", "-(SELECT 1)"),
        ("_sort", "family) --"),
        ("_include", "Patient:organization' OR '1'='1"),
        ("_include", "Patient:*;DELETE FROM resources"),
        ("_revinclude", "Observation:subject:Patient--"),
        ("_count", "1;DROP TABLE resources"),
        ("_total", "accurate' --"),
        ("_summary", "true;--"),
    ],
)
def test_injection_in_result_parameters_is_refused(shared_client, obrien, key, value):
    scope, _ = obrien
    assert _never_500(shared_client.get("/Patient", params={**scope, key: value})).status_code == 400


@pytest.mark.parametrize(
    "key",
    [
        "organization:Organization.name';--",
        "organization.name) OR (1=1",
        "_has:Observation:patient:code';DROP TABLE resources",
        "_has:Observation:patient';--:code",
        "family:exact' OR '1'='1",
        'name"; --',
    ],
)
def test_injection_in_parameter_names_is_ignored_and_reported_or_refused(shared_client, obrien, key):
    scope, pid = obrien
    response = _never_500(shared_client.get("/Patient", params={**scope, key: "x"}))
    if response.status_code == 200:
        bundle = response.json()
        assert ids(bundle) == [pid]  # the unknown parameter selected nothing away, and added nothing
        assert outcome_entries(bundle), "an ignored parameter is reported"
    strict = shared_client.get("/Patient", params={**scope, key: "x"}, headers={"Prefer": "handling=strict"})
    assert _never_500(strict).status_code == 400


def test_elements_with_junk_names_are_harmless(shared_client, obrien):
    scope, pid = obrien
    bundle = search(shared_client, "/Patient", {**scope, "_elements": 'name,"; DROP TABLE resources; --'})
    assert ids(bundle) == [pid] and "name" in bundle["entry"][0]["resource"]


# -- bytes no database should see -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param",
    [
        "family",
        "identifier",
        "_id",
        "_tag",
        "_profile",
        "general-practitioner",
        "organization.name",
        "_has:Observation:patient:code",
    ],
)
def test_nul_bytes_in_values_are_refused_or_literal(client, obrien, param):
    scope, _ = obrien
    value = {"general-practitioner": "http://example.org/\x00", "identifier": "urn:test|\x00"}.get(param, "a\x00b")
    response = _never_500(client.get("/Patient", params={**scope, param: value}))
    if response.status_code == 200:
        assert ids(response.json()) == []


def test_nul_byte_does_not_turn_contains_into_match_all(client, obrien):
    scope, _ = obrien
    response = _never_500(client.get("/Patient", params={**scope, "family:contains": "\x00"}))
    if response.status_code == 200:
        assert ids(response.json()) == []


def test_uri_above_treats_stored_wildcards_literally(client, uid):
    base = f"http://example.org/{uid}"
    for url in (f"{base}/a_c", f"{base}/100%"):
        create(client, {"resourceType": "Questionnaire", "status": "active", "url": url})
    assert found(client, "/Questionnaire", {"url:above": f"{base}/abc/def"}) == set()


# -- paging cursors are client input too ------------------------------------------------------------------------
def _cursor(values):
    return base64.urlsafe_b64encode(orjson.dumps({"k": values, "dir": "next"})).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "values", "fails_on"),
    [
        (None, [None], {"sqlite", "postgresql"}),
        (None, [1], {"postgresql"}),
        ("_lastUpdated", ["yesterday", "x"], {"postgresql"}),
        ("family", [5, "x"], {"postgresql"}),
        ("birthdate", [{"d": "2000-01-01T00:00:00"}, 3], {"postgresql"}),
    ],
)
def test_a_forged_cursor_is_refused_not_a_crash(client, obrien, sort, values, fails_on):
    scope, _ = obrien
    params = {**scope, "_cursor": _cursor(values), **({"_sort": sort} if sort else {})}
    _never_500(client.get("/Patient", params=params))


# -- deleted resources never come back --------------------------------------------------------------------------
@pytest.fixture
def with_deletions(client, uid):
    s = f"urn:codes:{uid}"
    org = create(client, {"resourceType": "Organization", "name": f"Gone{uid}"})
    pid = create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test", "value": uid}],
            "managingOrganization": ref("Organization", org),
        },
    )
    kept = create(client, observation(s, subject=ref("Patient", pid)))
    gone = create(client, observation(s, subject=ref("Patient", pid)))
    flag = create(
        client, {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": ref("Patient", pid)}
    )
    for path in (f"/Observation/{gone}", f"/Organization/{org}", f"/Flag/{flag}"):
        assert client.delete(path).status_code == 200
    return {"s": s, "uid": uid, "org": org, "pid": pid, "kept": kept, "gone": gone, "flag": flag}


def test_deleted_resources_never_leak(client, with_deletions):
    d = with_deletions
    seen = set()
    searches = [
        ("/Observation", {"code": f"{d['s']}|a"}),
        ("/Observation", {"_id": f"{d['gone']},{d['kept']}"}),
        ("/Organization", {"name": f"gone{d['uid']}"}),
        ("/Flag", {"patient": d["pid"]}),
        ("/Patient", {"_id": d["pid"], "_include": "Patient:organization", "_revinclude": "Observation:subject"}),
        ("/Patient", {"_id": d["pid"], "_revinclude": "*", "_include": "*"}),
        ("/Observation", {"_id": d["kept"], "_include": "Observation:subject", "_include:iterate": "*"}),
        (f"/Patient/{d['pid']}/Observation", {}),
        (f"/Patient/{d['pid']}/Flag", {}),
        (f"/Patient/{d['pid']}/$everything", {}),
    ]
    for path, params in searches:
        bundle = search(client, path, params)
        seen |= {i for _, i, _ in entries(bundle)}
        assert not ({d["gone"], d["org"], d["flag"]} & seen), (path, params)
    assert {d["kept"], d["pid"]} <= seen
    assert search(client, "/Observation", {"_id": f"{d['gone']},{d['kept']}", "_total": "accurate"})["total"] == 1
    scope = {"identifier": f"urn:test|{d['uid']}"}
    assert found(client, "/Patient", {**scope, "organization.name": f"gone{d['uid']}"}) == set()
    assert found(client, "/Patient", {**scope, "_has:Observation:subject:_id": d["gone"]}) == set()
    assert found(client, "/Patient", {**scope, "_has:Flag:patient:_id": d["flag"]}) == set()
    assert found(client, "/Patient", {**scope, "_has:Observation:subject:_id": d["kept"]}) == {d["pid"]}


# -- types and parameters that do not exist ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/Patient", {"_has:Nonsense:patient:code": "x"}, 400),
        ("/Patient", {"_has:Observation:patient:_has:Nonsense:subject:code": "x"}, 400),
        ("/Observation", {"subject:Nonsense.name": "x"}, 400),
        ("/Observation", {"_include": "Nonsense:subject"}, 400),
        ("/Observation", {"_revinclude": "Nonsense:subject"}, 400),
        ("/Nonsense", {"name": "x"}, 404),
        ("/Patient/x/Nonsense", {}, 404),
    ],
)
def test_types_that_do_not_exist_are_refused(shared_client, path, params, status):
    response = _never_500(shared_client.get(path, params=params)) if status == 400 else shared_client.get(path)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_parameters_that_do_not_exist_are_reported_then_refused_under_strict(shared_client, obrien):
    scope, pid = obrien
    for key in ("_has:Observation:nonsense:code", "_has:Observation:patient:nonsense", "organization.nonsense"):
        bundle = search(shared_client, "/Patient", {**scope, key: "x"})
        assert ids(bundle) == [pid] and key in str(outcome_entries(bundle)), key
        strict = shared_client.get("/Patient", params={**scope, key: "x"}, headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400, key


def test_a_search_stays_within_its_type(client, uid):
    obs = create(client, observation(f"urn:codes:{uid}"))
    assert found(client, "/Patient", {"_id": obs}) == set()
    assert found(client, "/Observation", {"_id": obs}) == {obs}


def test_everything_refuses_junk_types(shared_client, obrien):
    _, pid = obrien
    response = shared_client.get(f"/Patient/{pid}/$everything", params={"_type": "Observation';DROP TABLE x"})
    assert _never_500(response).status_code == 400

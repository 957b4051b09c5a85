"""FHIR R4 §3.1.1 search results: _sort, _count and paging links (next / previous), _total, _summary, _elements
(§3.1.1.5 search result parameters); unknown parameters (reported, or refused with ``Prefer: handling=strict``) and
malformed values (400 naming the parameter) as §3.1.1 "Handling errors" asks; POST ``[type]/_search``; and the
limits the server puts on the size of a search."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.api.fhir import FHIR_JSON
from tests.search.helpers import (
    all_ids,
    create,
    follow,
    found,
    ids,
    link,
    observation,
    outcome_entries,
    search,
    subsetted,
)


# -- _sort -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def people(shared_client, shared_uid):
    """Five Patients: (family, given, birthDate); the last has no family name, Alpha/a no birth date."""
    uid = f"{shared_uid}-sort"
    rows = {
        "beta": ("Beta", "b", "2001"),
        "alpha-z": ("alpha", "z", "2003"),
        "alpha-a": ("Alpha", "a", None),
        "gamma": ("Gamma", "g", "2002"),
        "nofamily": (None, "x", "2000"),
    }
    made = {}
    for key, (family, given, born) in rows.items():
        name = {"given": [given], **({"family": family} if family else {})}
        resource = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}], "name": [name]}
        made[key] = create(shared_client, {**resource, **({"birthDate": born} if born else {})})
        time.sleep(0.002)  # lastUpdated has millisecond precision: keep the creation order unambiguous
    return {"identifier": f"urn:test|{uid}"}, made


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("family,given", ["alpha-a", "alpha-z", "beta", "gamma", "nofamily"]),  # case-insensitive, missing last
        ("-family,given", ["gamma", "beta", "alpha-a", "alpha-z", "nofamily"]),  # missing last descending too
        ("family,-given", ["alpha-z", "alpha-a", "beta", "gamma", "nofamily"]),
        ("birthdate", ["nofamily", "beta", "gamma", "alpha-z", "alpha-a"]),
        ("-birthdate", ["alpha-z", "gamma", "beta", "nofamily", "alpha-a"]),
        ("_lastUpdated", ["beta", "alpha-z", "alpha-a", "gamma", "nofamily"]),  # creation order
        ("-_lastUpdated", ["nofamily", "gamma", "alpha-a", "alpha-z", "beta"]),
    ],
)
def test_sort(shared_client, people, sort, order):
    scope, made = people
    assert ids(search(shared_client, "/Patient", {**scope, "_sort": sort})) == [made[k] for k in order]


@pytest.mark.parametrize("count", ["1", "2", "3"])
def test_sorted_paging_returns_every_resource_once_in_order(shared_client, people, count):
    scope, made = people
    order = ["gamma", "beta", "alpha-a", "alpha-z", "nofamily"]
    assert all_ids(shared_client, "/Patient", {**scope, "_sort": "-family,given", "_count": count}) == [
        made[k] for k in order
    ]


def test_sort_by_date_then_id_pages_with_ties_and_missing_values(client, uid):
    s = f"urn:codes:{uid}"
    dates = ["2026-01-05", None, "2026-01-07", "2026-01-05", None, "2026-01-06T10:00:00Z", "2026-01-05"]
    made = [create(client, observation(s, **({"effectiveDateTime": d} if d else {}))) for d in dates]
    by_date = {rid: d for rid, d in zip(made, dates, strict=True)}
    served = all_ids(client, "/Observation", {"code": f"{s}|a", "_sort": "-date,_id", "_count": "2"})
    expected = sorted((r for r in made if by_date[r]), key=lambda r: (-int(by_date[r][8:10]), r))
    expected += sorted(r for r in made if by_date[r] is None)
    assert served == expected


@pytest.mark.parametrize("sort", ["nonsense", "-", ",", "code-value-quantity", "family,nonsense"])
def test_sort_by_an_unknown_parameter_is_refused(shared_client, people, sort):
    scope, _ = people
    response = shared_client.get("/Patient", params={**scope, "_sort": sort})
    assert response.status_code == 400, response.text


# -- _count and paging -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", ["-1", "abc", "1.5", "9999999999"])
def test_malformed_count_is_refused(shared_client, count):
    assert shared_client.get("/Patient", params={"_count": count}).status_code == 400


def test_count_zero_returns_no_entries_but_can_count(client, uid):
    for _ in range(2):
        create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
    bundle = search(client, "/Patient", {"identifier": f"urn:test|{uid}", "_count": "0", "_total": "accurate"})
    assert "entry" not in bundle and bundle["total"] == 2
    # R4: "_count=0 ... treated as _summary=count": the total without asking for it
    counted = search(client, "/Patient", {"identifier": f"urn:test|{uid}", "_count": "0"})
    assert "entry" not in counted and counted["total"] == 2


def test_an_empty_parameter_is_ignored(client, uid):
    """R4 search.html: "Empty parameters are not an error - they are just ignored" (a form left blank)."""
    create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}], "gender": "male"})
    for empty in (
        {"family": ""},
        {"birthdate": ""},
        {"gender": "", "_sort": ""},
        {"_count": ""},
        {"general-practitioner.name": ""},
    ):
        bundle = search(client, "/Patient", {"identifier": f"urn:test|{uid}", **empty})
        assert [e["resource"]["gender"] for e in bundle["entry"]] == ["male"], empty


def test_next_and_previous_links_walk_the_same_pages(client, uid):
    ident = [{"system": "urn:test", "value": uid}]
    made = [create(client, {"resourceType": "Patient", "identifier": ident}) for _ in range(7)]
    first = search(client, "/Patient", {"identifier": f"urn:test|{uid}", "_count": "2"})
    assert link(first, "previous") is None and link(first, "self")
    forward = follow(client, first)
    assert [len(ids(p)) for p in forward] == [2, 2, 2, 1]
    assert sorted(i for p in forward for i in ids(p)) == sorted(made)
    assert link(forward[-1], "next") is None
    backward = follow(client, forward[-1], "previous")
    assert [ids(p) for p in backward] == [ids(p) for p in reversed(forward)]


def test_paging_is_stable_while_resources_are_added(client, uid):
    """Keyset paging: resources created between pages never make an earlier one repeat or vanish."""
    ident = [{"system": "urn:test", "value": uid}]
    before = {create(client, {"resourceType": "Patient", "identifier": ident}) for _ in range(6)}
    for sort in (None, "_lastUpdated", "-_lastUpdated"):
        params = {"identifier": f"urn:test|{uid}", "_count": "2", **({"_sort": sort} if sort else {})}
        page = search(client, "/Patient", params)
        seen = ids(page)
        while next_url := link(page, "next"):
            time.sleep(0.002)  # a newcomer's lastUpdated (milliseconds) is then strictly later than the cursor's
            create(client, {"resourceType": "Patient", "identifier": ident})
            page = client.get(next_url).json()
            seen += ids(page)
        assert len(seen) == len(set(seen)), f"a resource repeated (sort {sort})"
        assert before <= set(seen), f"a resource vanished (sort {sort})"
        now = found(client, "/Patient", {"identifier": f"urn:test|{uid}", "_count": "1000"})
        if sort == "_lastUpdated":  # the newcomers sort after every cursor: each is reached
            assert set(seen) == now
        before = now


def test_paging_links_survive_post_search(client, uid):
    for _ in range(3):
        create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
    response = client.post(
        "/Patient/_search?_count=2",
        content=f"identifier=urn:test|{uid}&_sort=_lastUpdated".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    pages = follow(client, response.json())
    assert sum(len(ids(p)) for p in pages) == 3 and len(pages) == 2


def test_post_search_needs_a_form_body(client):
    response = client.post("/Patient/_search", content=b"{}", headers=FHIR_JSON)
    assert response.status_code == 415


@pytest.mark.parametrize("cursor", ["garbage", "%%%", "eyJrIjpbXX0", "e30", "W10"])
def test_a_cursor_from_garbage_is_refused(shared_client, cursor):
    response = shared_client.get("/Patient", params={"_cursor": cursor})
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "value"


# -- _total ----------------------------------------------------------------------------------------------------
def test_total(client, uid):
    for _ in range(3):
        create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
    scope = {"identifier": f"urn:test|{uid}", "_count": "1"}
    assert search(client, "/Patient", {**scope, "_total": "accurate"})["total"] == 3
    assert isinstance(search(client, "/Patient", {**scope, "_total": "estimate"})["total"], int)
    assert search(client, "/Patient", {**scope, "_total": "none"}).get("total", 3) == 3
    assert client.get("/Patient", params={**scope, "_total": "some"}).status_code == 400


# -- _summary and _elements ------------------------------------------------------------------------------------
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'}


@pytest.fixture
def summarised(client, uid):
    create(
        client,
        {
            "resourceType": "Patient",
            "text": NARRATIVE,
            "identifier": [{"system": "urn:test", "value": uid}],
            "name": [{"family": "Summary"}],
            "contact": [{"name": {"family": "Next of kin"}}],
        },
    )
    return {"identifier": f"urn:test|{uid}"}


@pytest.mark.parametrize(
    ("summary", "present", "absent"),
    [
        ("true", {"identifier", "name"}, {"contact", "text"}),  # only elements marked summary
        ("text", {"text"}, {"identifier", "name", "contact"}),
        ("data", {"identifier", "name", "contact"}, {"text"}),
    ],
)
def test_summary(client, summarised, summary, present, absent):
    resource = search(client, "/Patient", {**summarised, "_summary": summary})["entry"][0]["resource"]
    assert present <= set(resource) and not (absent & set(resource))
    assert {"resourceType", "id", "meta"} <= set(resource)
    assert subsetted(resource)


def test_summary_count_returns_only_the_total(client, summarised):
    bundle = search(client, "/Patient", {**summarised, "_summary": "count"})
    assert bundle["total"] == 1 and "entry" not in bundle


def test_summary_false_and_no_summary_return_the_whole_resource(client, summarised):
    resource = search(client, "/Patient", {**summarised, "_summary": "false"})["entry"][0]["resource"]
    assert {"text", "identifier", "name", "contact"} <= set(resource) and not subsetted(resource)


def test_elements(client, summarised):
    resource = search(client, "/Patient", {**summarised, "_elements": "name,contact"})["entry"][0]["resource"]
    assert {"name", "contact", "id", "meta"} <= set(resource)
    assert "identifier" not in resource and "text" not in resource
    assert subsetted(resource)


def test_summary_text_and_elements_keep_mandatory_elements(client, uid):
    """Regression: Observation.code (1..1, complex) was dropped; only primitives were seen as mandatory (899e871)."""
    s = f"urn:codes:{uid}"
    create(client, observation(s, text=NARRATIVE, valueQuantity={"value": 1}))
    for shaping in ({"_summary": "text"}, {"_elements": "valueQuantity"}):
        resource = search(client, "/Observation", {"code": f"{s}|a", **shaping})["entry"][0]["resource"]
        assert {"status", "code"} <= set(resource), shaping


def test_malformed_summary_is_refused(shared_client):
    assert shared_client.get("/Patient", params={"_summary": "some"}).status_code == 400


# -- errors and limits -----------------------------------------------------------------------------------------
def test_unknown_parameters_are_reported_or_refused_under_strict(client, uid):
    pid = create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]})
    params = {"identifier": f"urn:test|{uid}", "nonsense": "1"}
    bundle = search(client, "/Patient", params)
    assert ids(bundle) == [pid]
    [outcome] = outcome_entries(bundle)
    assert outcome["resourceType"] == "OperationOutcome" and "nonsense" in str(outcome)
    assert search(client, "/Patient", params, Prefer="handling=lenient")["entry"][0]["resource"]["id"] == pid
    strict = client.get("/Patient", params=params, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and "nonsense" in strict.text


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("birthdate", "2026-13-01"),  # bad date
        ("birthdate", "xx2026"),  # bad prefix
        ("_lastUpdated", "yesterday"),
        ("identifier", "a|b|c"),  # too many '|'
        ("gender:missing", "perhaps"),
        ("general-practitioner", "Patient/ has spaces"),
        ("family:nonsense", "x"),
    ],
)
def test_malformed_values_are_refused_naming_the_parameter(shared_client, param, value):
    response = shared_client.get("/Patient", params={param: value})
    assert response.status_code == 400, response.text
    assert param.split(":")[0] in response.json()["issue"][0]["diagnostics"]


def test_bad_quantity_is_refused_naming_the_parameter(shared_client):
    response = shared_client.get("/Observation", params={"value-quantity": "gt5|only-two"})
    assert response.status_code == 400 and "value-quantity" in response.text


def test_or_values_are_capped_at_100(shared_client, shared_uid):
    values = [f"urn:test|{shared_uid}-{n}" for n in range(101)]
    assert shared_client.get("/Patient", params={"identifier": ",".join(values[:100])}).status_code == 200
    response = shared_client.get("/Patient", params={"identifier": ",".join(values)})
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "too-costly"


def test_clauses_are_capped_at_40(shared_client, shared_uid):
    clause = ("identifier", f"urn:test|{shared_uid}")
    assert shared_client.get("/Patient", params=[clause] * 40).status_code == 200
    response = shared_client.get("/Patient", params=[clause] * 41)
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "too-costly"


# -- the page size cap -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thousand(shared_client, shared_uid, server):
    """1001 Patients in one transaction: enough to see both the default page size and the cap."""
    uid = f"{shared_uid}-many"
    entry = {
        "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]},
        "request": {"method": "POST", "url": "Patient"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 1001}
    response = shared_client.post("/", content=orjson.dumps(bundle), headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:500]
    if server.backend == "postgresql":
        # As after any bulk load: without fresh statistics a new database plans later searches badly (seconds)
        # until autovacuum analyses it.
        import psycopg

        with psycopg.connect(server.settings.database_url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    return {"identifier": f"urn:test|{uid}"}


def test_count_defaults_to_20_and_is_capped_at_1000(shared_client, thousand):
    first = search(shared_client, "/Patient", thousand)
    assert len(ids(first)) == 20 and link(first, "next")
    capped = search(shared_client, "/Patient", {**thousand, "_count": "5000", "_total": "accurate"})
    assert len(ids(capped)) == 1000 and capped["total"] == 1001
    rest = follow(shared_client, capped)
    assert [len(ids(page)) for page in rest] == [1000, 1]

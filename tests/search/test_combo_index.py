"""The combination index (search/combos.py) answers "a client's results of one measure, newest first" exactly as the
general search does: every query is run twice, once in the combination's shape and once with ``_id`` added as a
second sort key (the same order, searched the general way), page by page, on SQLite and PostgreSQL, over data made
to find the differences (two systems for one code, a code without a system, ties, no date, a period, updates,
deletions, another client, a Group subject, an absolute reference)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine

from fhir_server.search import combos
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.query import parse_search
from fhir_server.search.registry import default_registry
from fhir_server.store.engine import normalise_url
from fhir_server.store.search_combo import PreparedPage
from fhir_server.store.search_shapes import PLANS, Binder, walk
from fhir_server.store.search_sql import _statements
from tests.api.fhir import put
from tests.search.helpers import create, search
from tests.support.access_data import admin
from tests.support.databases import POSTGRES_ENV, postgres_admin_url, postgres_database
from tests.support.tokens import client_for, mint


def _observation(patient: str, codings: list[dict[str, str]], when: dict[str, Any] | None, **more: Any) -> dict:
    resource = {"resourceType": "Observation", "status": "final", "code": {"coding": codings}, **more}
    resource.setdefault("subject", {"reference": f"Patient/{patient}"})
    return {**resource, **(when or {})}


@pytest.fixture(scope="module")
def measured(shared_client: httpx.Client, shared_uid: str) -> dict[str, str]:
    """Two clients' results: ``a`` with every case, ``b`` with a few; returns their ids and the code system."""
    system, other = f"urn:codes:{shared_uid}", f"urn:other:{shared_uid}"
    a, b = (create(shared_client, {"resourceType": "Patient", "name": [{"family": name}]}) for name in "AB")
    x, x_other, x_bare, y = (
        {"system": system, "code": "x"}, {"system": other, "code": "x"}, {"code": "x"}, {"system": system, "code": "y"},
    )  # fmt: skip

    def at(day: int, hour: int = 10) -> dict[str, str]:
        return {"effectiveDateTime": f"2026-03-{day:02d}T{hour:02d}:00:00Z"}

    made = [_observation(a, [x], at(day)) for day in (1, 2, 3, 4, 5, 6, 7)] + [
        _observation(a, [x], at(4)),  # a tie with day 4: the id decides
        _observation(a, [x], at(3, 12), status="preliminary"),  # filtered out by status=final
        _observation(a, [x, x_other], at(8)),  # one code in two systems: met once by "x"
        _observation(a, [x_bare], at(9)),  # no system
        _observation(a, [x], None),  # no date: last
        _observation(a, [x], {"effectivePeriod": {"start": "2026-03-02", "end": "2026-03-20"}}),  # sorted by its end
        _observation(a, [x], {"effectiveDateTime": "2026-03"}),  # a month: its end
        _observation(a, [{"system": system, "code": "y"}], at(10)),
        _observation(a, [x], at(11), subject={"reference": f"Group/{a}"}),  # another type, the same id
        _observation(a, [x], at(12), subject={"reference": f"https://elsewhere.example/fhir/Patient/{a}"}),
        _observation(b, [x], at(5)),
        _observation(b, [x_bare, y], at(6)),
    ]
    ids = [create(shared_client, resource) for resource in made]
    changed, removed = ids[1], ids[2]
    response = put(shared_client, f"/Observation/{changed}", {**made[1], "id": changed, "code": {"coding": [y]}})
    assert response.status_code == 200, response.text
    assert shared_client.delete(f"/Observation/{removed}").status_code in (200, 204)
    return {"a": a, "b": b, "system": system, "other": other}


def _pages(client: httpx.Client, params: dict[str, str] | list[tuple[str, str]], path: str = "/Observation") -> list:
    """Every match's id, following the next links."""
    found: list[str] = []
    listed = list(params.items()) if isinstance(params, dict) else list(params)
    bundle = search(client, path, [*listed, ("_count", "3")])
    while True:
        found += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        link = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if link is None:
            return found
        response = client.get(link)
        assert response.status_code == 200, response.text
        bundle = response.json()


QUERIES = [
    lambda m: {"subject": f"Patient/{m['a']}", "code": f"{m['system']}|x"},
    lambda m: {"patient": m["a"], "code": "x"},
    lambda m: {"patient": m["a"], "code": "|x"},
    lambda m: {"subject:Patient": m["a"], "code": f"{m['other']}|x"},
    lambda m: {"patient": m["a"], "code": f"{m['system']}|y"},
    lambda m: {"subject": f"Patient/{m['b']}", "code": "x"},
    lambda m: {"patient": m["b"], "code": "|x"},
    lambda m: {"subject": f"Group/{m['a']}", "code": "x"},
    lambda m: {"patient": f"Patient/{m['a']}", "code": "x"},
    lambda m: {"patient:Group": m["a"], "code": "x"},  # the patient parameter holds Patients only: nothing
    lambda m: {"patient": "nobody", "code": "x"},
    # other clauses filter the client's rows of that code, as the general search does
    lambda m: {"patient": m["a"], "code": "x", "status": "final"},
    lambda m: {"patient": m["a"], "code": "x", "date": "ge2026-03-05"},
    lambda m: [("patient", m["a"]), ("code", "x"), ("code", f"{m['other']}|x")],
    lambda m: [("subject", m["a"]), ("patient", m["a"]), ("code", "x")],
]


@pytest.mark.parametrize("query", range(len(QUERIES)))
def test_the_combination_pages_exactly_as_the_general_search(shared_client, measured, query):
    params = QUERIES[query](measured)
    listed = list(params.items()) if isinstance(params, dict) else params
    combined = _pages(shared_client, [*listed, ("_sort", "-date")])
    general = _pages(shared_client, [*listed, ("_sort", "-date,_id")])
    assert combined == general
    assert combos.match(_query("&".join(f"{k}={v}" for k, v in [*listed, ("_sort", "-date")]))) is not None


def test_the_data_holds_the_cases_it_was_made_for(shared_client, measured):
    """The comparison above means something only if the combination's answers are the ones expected."""
    a = _pages(shared_client, {"patient": measured["a"], "code": "x", "_sort": "-date"})
    assert len(a) == 12  # 14 with x (one of them in two systems), less one deleted and one changed to y; not the
    # Group's, nor the one naming the client by another server's URL
    bare = _pages(shared_client, {"patient": measured["a"], "code": "|x", "_sort": "-date"})
    assert len(bare) == 1
    first = search(shared_client, "/Observation", {"patient": measured["a"], "code": "x", "_sort": "-date"})
    dates = [e["resource"].get("effectiveDateTime") or e["resource"].get("effectivePeriod", {}).get("end")
             for e in first["entry"]]  # fmt: skip
    assert dates[:3] == ["2026-03", "2026-03-20", "2026-03-09T10:00:00Z"]  # a month ends on the 31st
    assert dates[-1] is None  # no date: last


def test_a_patient_token_pages_exactly_as_the_general_search(guarded):
    """A patient token's search carries the compartment access control adds (its patient, and no other patient
    named): the combination walks the client's rows and applies it, as the general search does."""
    uid = uuid.uuid4().hex[:10]
    system, p, other = f"urn:combo:{uid}", f"combo-p-{uid}", f"combo-o-{uid}"
    with admin(guarded) as c:
        for patient in (p, other):
            assert c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
        for day in range(1, 8):
            more = {"performer": [{"reference": f"Patient/{other}"}]} if day in (3, 6) else {}  # not p's alone
            body = _observation(p, [{"system": system, "code": "x"}], {"effectiveDateTime": f"2026-04-0{day}"}, **more)
            assert c.post("/Observation", json=body).status_code == 201
    token = mint(guarded, "patient/Observation.rs", patient=p)
    with client_for(guarded, token) as c:
        listed = [("patient", p), ("code", f"{system}|x")]
        combined = _pages(c, [*listed, ("_sort", "-date")])
        general = _pages(c, [*listed, ("_sort", "-date,_id")])
    assert combined == general
    assert len(combined) == 5  # the two that also name another patient are not this token's


# -- which queries the combination answers ------------------------------------------------------------------------
ANSWERED = [
    "subject=Patient/p&code=s|c&_sort=-date",
    "patient=p&code=c&_sort=-date",
    "code=|c&subject:Patient=p&_sort=-date&_count=5",
    "patient=p&code=c&status=final&_sort=-date",  # other clauses filter the rows
    "patient=p&code=c&code=d&_sort=-date",
    "subject=p&patient=q&code=c&_sort=-date",
    "patient:Group=p&code=c&_sort=-date",  # answered, and matches nothing (a Group is no patient)
]
NOT_ANSWERED = [
    "subject=p&code=s|c&_sort=-date",  # an id alone may be any type
    "subject=https://x.example/Patient/p&code=c&_sort=-date",
    "patient=p&code=c",  # not sorted by the date
    "patient=p&code=c&_sort=date",
    "patient=p&code=c&_sort=-date,_id",
    "patient=p&code=c,d&_sort=-date",
    "patient=p&code:not=c&_sort=-date",
    "patient=p&code:text=c&_sort=-date",
    "patient=p&code=s|&_sort=-date",
    "patient=p&patient=q&_sort=-date",
    "status=final&code=c&_sort=-date",
    "patient=p,q&code=c&_sort=-date",
]


def _query(text: str) -> Any:
    params = [tuple(part.split("=", 1)) for part in text.split("&")]
    return parse_search("Observation", params, default_registry())


@pytest.mark.parametrize("text", ANSWERED)
def test_a_typed_reference_and_one_code_sorted_newest_first_is_answered(text):
    assert combos.match(_query(text)) is not None


@pytest.mark.parametrize("text", NOT_ANSWERED)
def test_any_other_query_takes_the_general_search(text):
    assert combos.match(_query(text)) is None


def test_queries_of_one_shape_share_a_statement_and_not_their_values():
    first, second = _query("patient=p&code=s|c&_sort=-date"), _query("patient=q&code=t|d&_sort=-date")
    assert walk(first, None)[0] == walk(second, None)[0]
    assert walk(first, None)[1] != walk(second, None)[1]
    anywhere = _query("patient=p&code=c&_sort=-date")
    assert walk(first, None)[0] != walk(anywhere, None)[0]  # the system's absence is shape: another mode


# -- PostgreSQL reads one index range ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if postgres_admin_url() is None:
        pytest.skip(f"PostgreSQL half skipped: {POSTGRES_ENV} unset")
    from fhir_server.store.migrate import upgrade

    with postgres_database(postgres_admin_url() or "") as url:
        upgrade(url)
        yield url


def page_plan(database: str, query: Any) -> str:
    """PostgreSQL's plan of the query's page statement, on an empty database: the plan its indexes allow."""
    slots: dict = {}
    walk(query, None, slots)
    statement = _statements(query, None, Binder(slots))["page"]
    compiled = statement.compile(dialect=_pg_dialect(), compile_kwargs={"render_postcompile": True})
    with psycopg.connect(database) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: the plan the index allows, not a scan of nothing
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + str(compiled), compiled.params).fetchall())


def test_postgresql_reads_the_page_from_the_combination_index(postgres):
    query = _query("patient=p&code=s|c&_sort=-date")
    plan = page_plan(postgres, query)
    assert "ix_idx_combo_value" in plan, plan
    assert "Sort" not in plan.replace("Sort Key", ""), plan  # the index's order is the page's order
    # and the server runs it prepared on the driver, its shape's literals in its text and the values bound
    plan, params = PLANS.plan("postgresql", query, None, lambda b: _statements(query, None, b))
    prepared = PreparedPage.of(plan)
    assert prepared is not None and PreparedPage.of(plan) is prepared  # made once, kept with the plan
    assert "'subject+code:-date'" in prepared.sql and "'Patient'" in prepared.sql
    assert "%(v" in prepared.sql and "'p'" not in prepared.sql  # the values stay parameters
    engine = create_engine(normalise_url(postgres))
    with engine.connect() as conn:
        assert prepared.rows(conn, params) == []
    engine.dispose()
    PLANS.clear()


def _pg_dialect() -> Any:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql import psycopg as driver

    return driver.dialect() if hasattr(driver, "dialect") else postgresql.dialect()


# -- the upgrade fills the index for what was stored before ---------------------------------------------------------
STORED = {
    "o1": _observation("p1", [{"system": "s", "code": "c"}, {"code": "c"}], {"effectiveDateTime": "2025-01-02"}),
    "o2": _observation("p1", [{"system": "s", "code": "d"}], None, subject={"reference": "Group/g"}),
    "o3": _observation("p2", [{"system": "s", "code": "c"}], {"effectiveDateTime": "2025-02-03T04:05:06Z"}),
    "gone": _observation("p1", [{"system": "s", "code": "c"}], None),
}


def _databases(tmp_path: Any) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/upgrade.db"
    if postgres_admin_url() is not None:
        with postgres_database(postgres_admin_url() or "") as url:
            yield url


def upgrade_checked(tmp_path: Any, before: str, resource_type: str, stored: dict[str, dict]) -> None:
    """Store ``stored`` (the id "gone" deleted) at revision ``before``, upgrade to the head, and check the
    combination rows the upgrade made: exactly the indexer's, and on SQLite written as the server writes dates (a
    keyset compares them as text there)."""
    import orjson
    from sqlalchemy import insert, select, text

    from fhir_server.store.batch import _sqlite_time
    from fhir_server.store.migrate import upgrade
    from fhir_server.store.records import utc_now
    from fhir_server.store.tables import idx_combo, resources

    indexer, columns = SearchIndexer(default_registry()), [c.name for c in idx_combo.columns]
    expected = sorted(
        tuple({**row, "resource_type": resource_type, "resource_id": rid}[c] for c in columns)
        for rid, resource in stored.items()
        if rid != "gone"
        for row in indexer.index_rows(resource_type, resource)["combo"]
    )
    for url in _databases(tmp_path):
        upgrade(url, before)
        engine = create_engine(normalise_url(url))
        with engine.begin() as conn:
            conn.execute(insert(resources), [
                {"resource_type": resource_type, "id": rid, "version_id": 1, "last_updated": utc_now(),
                 "deleted": rid == "gone", "content": None if rid == "gone" else orjson.dumps(r).decode()}
                for rid, r in stored.items()
            ])  # fmt: skip
        upgrade(url)
        with engine.connect() as conn:
            made = sorted(tuple(row) for row in conn.execute(select(idx_combo)))
            written = {row[0] for row in conn.execute(text("SELECT CAST(sort_at AS TEXT) FROM idx_combo"))}
        engine.dispose()
        assert made == expected, url
        if url.startswith("sqlite"):
            assert written == {_sqlite_time(row[-1]) for row in expected}


def test_the_upgrade_indexes_the_observations_stored_before_it(tmp_path):
    # o1: Patient/p1 by (=s|c, -|c, *|c); o2: Group/g by (=s|d, *|d); o3: 2
    assert sum(len(SearchIndexer(default_registry()).index_rows("Observation", r)["combo"])
               for rid, r in STORED.items() if rid != "gone") == 7  # fmt: skip
    upgrade_checked(tmp_path, "0018", "Observation", STORED)

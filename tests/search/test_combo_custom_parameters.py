"""The combination index (search/combos.py) against an operator's SearchParameter that redefines one of the
parameters it combines: a query naming the redefined parameter is answered by the general search on that
parameter's own rows, never by the combination's rows (made from R4's definitions), and a plan kept for the R4
parameter is not reused for the redefined one (the expression is part of a query's shape)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.search import combos
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.query import parse_search
from fhir_server.search.registry import SearchParam, default_registry
from fhir_server.store.search_shapes import walk
from tests.search.helpers import create
from tests.search.test_combo_index import _pages
from tests.support.databases import fresh_database
from tests.support.server import ServerThread

SYSTEM = "urn:combo-custom"
# R4's definitions of the parameters the combination reads, and an operator's redefinition of each
REDEFINED = {
    "subject": ("reference", "Observation.performer"),
    "patient": ("reference", "Observation.performer.where(resolve() is Patient)"),
    "code": ("token", "Observation.category"),
    "date": ("date", "Observation.issued"),
}


def _registry(code: str, expression: str) -> Any:
    registry = default_registry()
    type_ = REDEFINED[code][0]
    registry.set_custom([SearchParam(code, "Observation", type_, expression, url=f"urn:sp:{code}")])
    return registry


def _query(text: str, registry: Any) -> Any:
    return parse_search("Observation", [tuple(p.split("=", 1)) for p in text.split("&")], registry)


QUERIES = ["subject=Patient/p&code=s|c&_sort=-date", "patient=p&code=c&_sort=-date"]


@pytest.mark.parametrize("code", sorted(REDEFINED))
@pytest.mark.parametrize("text", QUERIES)
def test_a_query_naming_a_redefined_parameter_takes_the_general_search(code, text):
    assert combos.match(_query(text, default_registry())) is not None
    mentioned = code in text.split("&")[0] or code in ("code", "date")
    found = combos.match(_query(text, _registry(code, REDEFINED[code][1])))
    assert (found is None) == mentioned


@pytest.mark.parametrize("code", sorted(REDEFINED))
def test_a_redefinition_with_r4s_own_expression_is_still_answered(code):
    spec = default_registry().get("Observation", code)
    registry = _registry(code, spec.expression)
    assert combos.match(_query("subject=Patient/p&patient=p&code=c&_sort=-date", registry)) is not None


@pytest.mark.parametrize("code", sorted(REDEFINED))
def test_the_redefined_parameter_is_another_shape(code):
    text = "subject=Patient/p&patient=p&code=c&_sort=-date"
    spec = walk(_query(text, default_registry()), None)[0]
    assert walk(_query(text, _registry(code, REDEFINED[code][1])), None)[0] != spec


@pytest.mark.parametrize("code", sorted(REDEFINED))
def test_the_combination_rows_stay_r4s_while_a_parameter_is_redefined(code):
    resource = {
        "resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p"},
        "performer": [{"reference": "Patient/q"}], "category": [{"coding": [{"system": "urn:cat", "code": "k"}]}],
        "code": {"coding": [{"system": "urn:s", "code": "c"}]}, "effectiveDateTime": "2026-01-02",
        "issued": "2026-05-06T00:00:00Z",
    }  # fmt: skip
    made = SearchIndexer(default_registry()).index_rows("Observation", resource)["combo"]
    assert {(r["ref_id"], r["code"]) for r in made} == {("p", "c")}
    redefined = SearchIndexer(_registry(code, REDEFINED[code][1])).index_rows("Observation", resource)
    assert redefined["combo"] == made


# -- over HTTP: a server whose ``subject`` is redefined ---------------------------------------------------------
@pytest.fixture
def own_server(backend: str) -> Iterator[httpx.Client]:
    with fresh_database(backend) as url:
        settings = Settings(database_url=url, _env_file=None)
        with ServerThread(settings, backend) as running, httpx.Client(base_url=running.fhir_base) as client:
            yield client


def _observation(subject: str, performer: str, day: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{subject}"},
        "performer": [{"reference": f"Patient/{performer}"}], "code": {"coding": [{"system": SYSTEM, "code": "x"}]},
        "effectiveDateTime": f"2026-02-{day:02d}",
    }  # fmt: skip


def test_a_redefined_subject_is_searched_on_its_own_rows(own_server):
    client = own_server
    p, q = (create(client, {"resourceType": "Patient"}) for _ in "pq")
    query = [("subject", f"Patient/{p}"), ("code", f"{SYSTEM}|x")]
    before = [create(client, _observation(p, q, day)) for day in (1, 2, 3)]
    assert _pages(client, [*query, ("_sort", "-date")]) == before[::-1]  # the combination, its plan kept

    definition = {
        "resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/obs-subject-performer",
        "name": "subject", "status": "active", "description": "subject as the performer", "code": "subject",
        "base": ["Observation"], "type": "reference", "expression": "Observation.performer", "target": ["Patient"],
    }  # fmt: skip
    created = client.post("/SearchParameter", json=definition)
    assert created.status_code == 201, created.text
    # written while subject is the performer: indexed under subject by their performer
    by_performer = [create(client, _observation(q, p, day)) for day in (4, 5, 6, 7)]
    by_subject = [create(client, _observation(p, q, day)) for day in (8, 9)]

    combined = _pages(client, [*query, ("_sort", "-date")])
    assert combined == _pages(client, [*query, ("_sort", "-date,_id")])
    # the redefined parameter's rows, not the subject's (and those stored before it, until a reindex: custom.py)
    assert combined == (before + by_performer)[::-1]
    # patient= is still R4's (the subject, when a Patient): answered by the combination, and it agrees
    patient = [("patient", p), ("code", f"{SYSTEM}|x")]
    assert _pages(client, [*patient, ("_sort", "-date")]) == (before + by_subject)[::-1]
    assert _pages(client, [*patient, ("_sort", "-date,_id")]) == (before + by_subject)[::-1]

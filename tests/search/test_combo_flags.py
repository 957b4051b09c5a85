"""The Flags' combination index (search/combos.py ``subject+status``): ``Flag?patient=x&status=active``, the clinician
view's and every CDS hook's question, answered from one range in the general search's default order (by id), page by
page exactly as the general search answers it, with a patient token too; and filled by the upgrade for the Flags
stored before it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.search import combos
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.query import parse_search
from fhir_server.search.registry import default_registry
from tests.search.helpers import create
from tests.search.test_combo_index import _pages, page_plan, postgres, upgrade_checked  # noqa: F401 (a fixture)
from tests.support.access_data import admin
from tests.support.tokens import client_for, mint

FIT_FLAGS = "http://fit-fhir.org/fhir/CodeSystem/fit-flags"
ROOT = Path(__file__).resolve().parents[2]


def _flag(patient: str, status: str, code: str = "alliance-low", **more: Any) -> dict[str, Any]:
    flag = {"resourceType": "Flag", "status": status, "code": {"coding": [{"system": FIT_FLAGS, "code": code}]}}
    flag.setdefault("subject", {"reference": f"Patient/{patient}"})
    return {**flag, **more}


@pytest.fixture(scope="module")
def flagged(shared_client: httpx.Client) -> dict[str, str]:
    a, b = (create(shared_client, {"resourceType": "Patient", "name": [{"family": name}]}) for name in "AB")
    made = [_flag(a, "active") for _ in range(7)] + [
        _flag(a, "inactive"),
        _flag(a, "entered-in-error"),
        _flag(a, "active", "outcome-deteriorated"),
        _flag(a, "active", subject={"reference": f"Group/{a}"}),  # another type, the same id
        _flag(b, "active"),
    ]
    ids = [create(shared_client, flag) for flag in made]
    changed, removed = ids[1], ids[2]
    response = shared_client.put(f"/Flag/{changed}", json={**made[1], "id": changed, "status": "inactive"})
    assert response.status_code == 200, response.text
    assert shared_client.delete(f"/Flag/{removed}").status_code in (200, 204)
    return {"a": a, "b": b}


QUERIES = [
    lambda m: {"patient": m["a"], "status": "active"},
    lambda m: {"subject": f"Patient/{m['a']}", "status": "active"},
    lambda m: {"subject:Patient": m["a"], "status": "inactive"},
    lambda m: {"patient": m["a"], "status": "|active"},  # a code has no system: the same Flags
    lambda m: {"patient": m["a"], "status": "http://hl7.org/fhir/flag-status|active"},  # none is indexed with one
    lambda m: {"patient": m["b"], "status": "active"},
    lambda m: {"subject": f"Group/{m['a']}", "status": "active"},
    lambda m: {"patient:Group": m["a"], "status": "active"},  # the patient parameter holds Patients only: nothing
    lambda m: {"patient": m["a"], "status": "active", "code": f"{FIT_FLAGS}|outcome-deteriorated"},  # filtered
]


@pytest.mark.parametrize("query", range(len(QUERIES)))
def test_the_flags_combination_pages_exactly_as_the_general_search(shared_client, flagged, query):
    listed = list(QUERIES[query](flagged).items())
    combined = _pages(shared_client, listed, "/Flag")
    general = _pages(shared_client, [*listed, ("_sort", "_id")], "/Flag")  # the same order, the general search
    assert combined == general
    text = "&".join(f"{k}={v}" for k, v in listed)
    assert combos.match(parse_search("Flag", [tuple(p.split("=", 1)) for p in text.split("&")], _registry()))


def test_the_flags_data_holds_the_cases_it_was_made_for(shared_client, flagged):
    active = _pages(shared_client, {"patient": flagged["a"], "status": "active"}, "/Flag")
    assert len(active) == 6  # 8 active, less the one made inactive and the deleted one; not the Group's
    assert active == sorted(active)  # the id order
    assert len(_pages(shared_client, {"patient": flagged["a"], "status": "inactive"}, "/Flag")) == 2


def test_a_patient_token_pages_the_flags_exactly_as_the_general_search(guarded):
    uid = uuid.uuid4().hex[:10]
    p, other = f"flag-p-{uid}", f"flag-o-{uid}"
    with admin(guarded) as c:
        for patient in (p, other):
            assert c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
        for n in range(7):
            assert c.post("/Flag", json=_flag(other if n in (2, 5) else p, "active")).status_code == 201
    token = mint(guarded, "patient/Flag.rs", patient=p)
    with client_for(guarded, token) as c:
        listed = [("patient", p), ("status", "active")]
        combined = _pages(c, listed, "/Flag")
        general = _pages(c, [*listed, ("_sort", "_id")], "/Flag")
    assert combined == general
    assert len(combined) == 5  # not the other patient's two
    # the token's compartment is a clause of its search (search/combos.py ``extras``): another patient's Flags are
    # refused or empty, by either path
    with client_for(guarded, token) as c:
        for sort in ([], [("_sort", "_id")]):
            response = c.get("/Flag", params=[("patient", other), ("status", "active"), *sort])
            assert response.status_code == 403 or not response.json().get("entry"), response.text


# -- which queries it answers --------------------------------------------------------------------------------------
def _registry() -> Any:
    registry = default_registry()
    registry.set_custom(combos.PRODUCT_PARAMETERS)  # as the library stores it at start-up
    return registry


def _query(text: str) -> Any:
    return parse_search("Flag", [tuple(p.split("=", 1)) for p in text.split("&")], _registry())


@pytest.mark.parametrize("text", ["patient=p&status=active", "subject=Patient/p&status=active&_count=5"])
def test_a_client_and_a_status_unsorted_is_answered(text):
    assert combos.match(_query(text)) is not None


@pytest.mark.parametrize(
    "text",
    ["patient=p&status=active&_sort=_id", "patient=p&status=active&_sort=-date", "patient=p&status=active,inactive",
     "patient=p&status:not=active", "subject=p&status=active", "status=active"],
)  # fmt: skip
def test_other_flag_queries_take_the_general_search(text):
    assert combos.match(_query(text)) is None


def test_postgresql_reads_the_flags_page_from_the_combination_index_in_its_order(postgres):  # noqa: F811
    plan = page_plan(postgres, _query("patient=p&status=active"))
    assert "ix_idx_combo_value" in plan, plan
    assert "Sort" not in plan.replace("Sort Key", ""), plan  # the range is in id order


def test_without_the_products_status_parameter_there_is_no_flag_combination():
    # a server that has not stored the library's SearchParameter: status is not a Flag parameter at all
    query = parse_search("Flag", [("patient", "p"), ("status", "active")], default_registry())
    assert combos.match(query) is None


def test_the_status_definition_is_the_one_the_library_ships():
    shipped = orjson.loads((ROOT / "terminology" / "searchparameter-flag-status.json").read_bytes())
    [ours] = [p for p in combos.PRODUCT_PARAMETERS if (p.base, p.code) == ("Flag", "status")]
    assert (ours.url, ours.code, [ours.base], ours.type, ours.expression) == (
        shipped["url"], shipped["code"], shipped["base"], shipped["type"], shipped["expression"],
    )  # fmt: skip


# -- the upgrade fills the index for the Flags stored before it ----------------------------------------------------
STORED = {
    "f1": _flag("p1", "active"),
    "f2": _flag("p1", "inactive", subject={"reference": "Group/g"}),
    "gone": _flag("p1", "active"),
}


def test_the_upgrade_indexes_the_flags_stored_before_it(tmp_path):
    # f1: Patient/p1 by (*active, -active); f2: Group/g likewise
    assert sum(len(SearchIndexer(default_registry()).index_rows("Flag", r)["combo"])
               for rid, r in STORED.items() if rid != "gone") == 4  # fmt: skip
    upgrade_checked(tmp_path, "0019", "Flag", STORED)

"""Kept search plans under concurrency (issue 23): searches of one shape from different callers at the same time
each get their own values' results — never another request's patient, code or page.

Two patients' tokens search ``Observation?code=…`` at once (the shape is the same; the access policy's
compartment clause carries each token's patient as a value), and a system token searches the two patients by
``subject`` at once, through real HTTP on both databases.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.access_data import admin, observation
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

ROUNDS = 40
CODE_SYSTEM = "http://example.org/kept-plans"


@pytest.fixture(scope="module")
def patients(guarded: RunningServer) -> dict[str, set[str]]:
    """Two patients, each with three Observations of one code (ids by patient)."""
    uid = uuid.uuid4().hex[:10]
    code = f"{CODE_SYSTEM}|kept-{uid}"
    owned: dict[str, set[str]] = {}
    with admin(guarded) as c:
        for name in ("a", "b"):
            patient = f"kept-{name}-{uid}"
            assert c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
            owned[patient] = set()
            for _ in range(3):
                body = observation(patient, code={"coding": [{"system": CODE_SYSTEM, "code": f"kept-{uid}"}]})
                created = c.post("/Observation", json=body)
                assert created.status_code == 201, created.text
                owned[patient].add(created.json()["id"])
    owned["code"] = {code}  # type: ignore[assignment]
    return owned


def _ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


def test_two_patients_tokens_searching_at_once_each_see_only_their_own(guarded, patients):
    (code,) = patients["code"]
    people = [p for p in patients if p != "code"]

    def search_as(patient: str) -> list[set[str]]:
        token = mint(guarded, "patient/Observation.rs", patient=patient)
        with client_for(guarded, token) as c:
            return [_ids(c.get("/Observation", params={"code": code})) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(4) as pool:
        results = list(zip(people * 2, pool.map(search_as, people * 2), strict=True))
    for patient, found_each_time in results:
        assert all(found == patients[patient] for found in found_each_time), patient


def test_one_shape_with_different_values_at_once_answers_each_its_own(guarded, patients):
    (code,) = patients["code"]
    people = [p for p in patients if p != "code"]
    token = mint(guarded, "system/Observation.rs")

    def search_for(patient: str) -> list[set[str]]:
        with client_for(guarded, token) as c:
            params = {"subject": f"Patient/{patient}", "code": code, "_count": "2", "_sort": "_id"}
            pages = []
            for _ in range(ROUNDS // 2):
                first = c.get("/Observation", params=params)
                following = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
                pages.append(_ids(first) | _ids(c.get(following)))  # the second page binds a cursor's values
            return pages

    with ThreadPoolExecutor(4) as pool:
        results = list(zip(people * 2, pool.map(search_for, people * 2), strict=True))
    for patient, found_each_time in results:
        assert all(found == patients[patient] for found in found_each_time), patient

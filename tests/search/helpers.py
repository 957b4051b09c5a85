"""Helpers for the search tests: create resources, run a search, read the searchset Bundle it returns.

Every test shares its database with the others, so each one scopes its searches to data only it created (a unique
code system ``urn:codes:{uid}``, identifier ``urn:test|{uid}`` or a Patient of its own).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.fhir import post

UCUM = "http://unitsofmeasure.org"
SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")

Params = dict[str, str] | list[tuple[str, str]] | None


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    """Create the resource and return its id (the server assigns it)."""
    response = post(client, f"/{resource['resourceType']}", resource)
    assert response.status_code == 201, f"{response.status_code} {response.text[:500]}"
    return response.json()["id"]


def search(client: httpx.Client, path: str, params: Params = None, **headers: str) -> dict[str, Any]:
    """GET a search and return its searchset Bundle (asserting that it is one)."""
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 200, f"{response.status_code} {response.text[:500]}"
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset", bundle
    return bundle


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    """Ids of the entries with this search mode, in Bundle order."""
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def found(client: httpx.Client, path: str, params: Params = None) -> set[str]:
    """The ids a search matches (one page, which the tests keep small)."""
    return set(ids(search(client, path, params)))


def entries(bundle: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(resourceType, id, search mode) of every entry."""
    return [
        (e["resource"]["resourceType"], e["resource"].get("id", ""), e["search"]["mode"])
        for e in bundle.get("entry", [])
    ]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    urls = [item["url"] for item in bundle.get("link", []) if item["relation"] == relation]
    assert len(urls) <= 1, bundle["link"]
    return urls[0] if urls else None


def follow(client: httpx.Client, bundle: dict[str, Any], relation: str = "next", limit: int = 200) -> list[dict]:
    """The bundle and every page reached through ``relation`` links after it."""
    pages = [bundle]
    while (url := link(pages[-1], relation)) is not None:
        assert len(pages) < limit, "paging does not end"
        response = client.get(url)
        assert response.status_code == 200, f"{response.status_code} {response.text[:500]}"
        pages.append(response.json())
    return pages


def all_ids(client: httpx.Client, path: str, params: Params = None) -> list[str]:
    """Every match of a search, following next links to the end, in the order served."""
    return [i for page in follow(client, search(client, path, params)) for i in ids(page)]


def outcome_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def quantity(value: float, code: str = "mg", system: str = UCUM) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": system, "code": code}


def observation(system: str, code: str = "a", **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [coding(system, code)]}, **fields}


def ref(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def subsetted(resource: dict[str, Any]) -> bool:
    return any((t.get("system"), t.get("code")) == SUBSETTED for t in resource.get("meta", {}).get("tag", []))

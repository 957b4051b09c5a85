"""FHIR R4 §3.1.1 search, the part the core needs: _id, _lastUpdated, identifier tokens, _count paging,
_total and _summary=count.  The full grammar is tested in tests/search/."""

from __future__ import annotations

from tests.api.fhir import patient, post


def _ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_search_by_id_and_identifier(client, uid):
    ids = [post(client, "/Patient", patient(uid)).json()["id"] for _ in range(3)]
    assert _ids(client.get("/Patient", params={"_id": ids[0]}).json()) == [ids[0]]
    assert sorted(_ids(client.get("/Patient", params={"_id": f"{ids[0]},{ids[1]}"}).json())) == sorted(ids[:2])
    found = client.get("/Patient", params={"identifier": f"urn:test|{uid}"}).json()
    assert sorted(_ids(found)) == sorted(ids) and found["total"] == 3
    assert _ids(client.get("/Patient", params={"identifier": "urn:other|" + uid}).json()) == []


def test_last_updated_prefixes(client, uid):
    created = post(client, "/Patient", patient(uid)).json()
    stamp = created["meta"]["lastUpdated"]
    params = {"identifier": f"urn:test|{uid}"}
    assert _ids(client.get("/Patient", params={**params, "_lastUpdated": f"ge{stamp}"}).json()) == [created["id"]]
    assert _ids(client.get("/Patient", params={**params, "_lastUpdated": f"gt{stamp}"}).json()) == []
    assert _ids(client.get("/Patient", params={**params, "_lastUpdated": f"eq{stamp[:10]}"}).json()) == [created["id"]]
    assert _ids(client.get("/Patient", params={**params, "_lastUpdated": "lt2000-01-01"}).json()) == []


def test_paging_returns_every_resource_exactly_once(client, uid):
    ids = {post(client, "/Patient", patient(uid)).json()["id"] for _ in range(7)}
    seen = []
    page = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_count": 3}).json()
    while True:
        seen.extend(_ids(page))
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = client.get(following[0]).json()
    assert sorted(seen) == sorted(ids)


def test_summary_count_and_total(client, uid):
    for _ in range(2):
        post(client, "/Patient", patient(uid))
    counted = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_summary": "count"}).json()
    assert counted["total"] == 2 and "entry" not in counted
    accurate = client.get("/Patient", params={"identifier": f"urn:test|{uid}", "_total": "accurate", "_count": 1})
    assert accurate.json()["total"] == 2


def test_post_search(client, uid):
    pid = post(client, "/Patient", patient(uid)).json()["id"]
    response = client.post(
        "/Patient/_search",
        content=f"identifier=urn:test|{uid}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == [pid]

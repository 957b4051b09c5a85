"""docs/security.md integrity rules under real concurrency (parallel HTTP requests, separate database connections):
a stale If-Match loses with 412, concurrent updates without If-Match all land as consecutive versions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from tests.api.fhir import FHIR_JSON, patient, post

WRITERS = 8


def _parallel(server, requests):
    """Send each (method, url, body, headers) from its own client at the same moment."""
    barrier = threading.Barrier(len(requests))

    def send(request):
        method, url, body, headers = request
        with httpx.Client(base_url=server.fhir_base, timeout=60) as own:
            barrier.wait()
            return own.request(method, url, content=orjson.dumps(body), headers={**FHIR_JSON, **headers})

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_same_if_match_exactly_one_writer_wins(client, server, uid):
    pid = post(client, "/Patient", patient(uid)).json()["id"]
    requests = [
        ("PUT", f"/Patient/{pid}", {**patient(uid), "id": pid, "name": [{"family": f"W{i}"}]}, {"If-Match": 'W/"1"'})
        for i in range(WRITERS)
    ]
    statuses = sorted(r.status_code for r in _parallel(server, requests))
    assert statuses == [200] + [412] * (WRITERS - 1)
    history = client.get(f"/Patient/{pid}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_concurrent_updates_land_as_consecutive_versions(client, server, uid):
    pid = post(client, "/Patient", patient(uid)).json()["id"]
    requests = [
        ("PUT", f"/Patient/{pid}", {**patient(uid), "id": pid, "name": [{"family": f"W{i}"}]}, {})
        for i in range(WRITERS)
    ]
    responses = _parallel(server, requests)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    versions = sorted(int(r.json()["meta"]["versionId"]) for r in responses)
    assert versions == list(range(2, WRITERS + 2))  # every writer got its own version, none lost
    history = client.get(f"/Patient/{pid}/_history", params={"_count": 50}).json()
    families = {
        e["resource"]["name"][0]["family"] for e in history["entry"] if e["resource"]["meta"]["versionId"] != "1"
    }
    assert families == {f"W{i}" for i in range(WRITERS)}


def test_concurrent_update_as_create_of_one_id(client, server, uid):
    requests = [
        ("PUT", f"/Patient/{uid}", {**patient(uid), "id": uid, "active": i % 2 == 0}, {}) for i in range(WRITERS)
    ]
    responses = _parallel(server, requests)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (WRITERS - 1) + [201]
    assert client.get(f"/Patient/{uid}").json()["meta"]["versionId"] == str(WRITERS)

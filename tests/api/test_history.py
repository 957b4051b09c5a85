"""FHIR R4 §3.1.0.4 history (http.html#history), with vread (http.html#vread) of each listed version.

A history Bundle (type ``history``) lists versions newest first; each entry carries ``request`` (what was done)
and ``response`` (status, etag, lastModified); a deletion has no resource.  ``_since`` keeps versions written at
or after an instant, ``_at`` the versions current at a time, ``_count`` pages through ``next`` links.
The database is shared, so type and system history are always read with a ``_since`` captured by the test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test"
PAUSE = 0.02  # versions written this far apart never share a millisecond timestamp


def patient(uid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": uid}], "name": [{"family": family}]}


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    return answer.json()


def update(client: httpx.Client, resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    time.sleep(PAUSE)
    answer = client.put(f"/Patient/{resource['id']}", json={**resource, **changes}, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return answer.json()


def delete(client: httpx.Client, resource: dict[str, Any]) -> None:
    time.sleep(PAUSE)
    assert client.delete(f"/Patient/{resource['id']}").status_code in (200, 204)


def history(client: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "history")
    return bundle


def etags(bundle: dict[str, Any]) -> list[str]:
    return [e["response"]["etag"] for e in bundle.get("entry", [])]


def full_urls(bundle: dict[str, Any]) -> list[str]:
    return [e["fullUrl"] for e in bundle.get("entry", [])]


def now() -> str:
    """This instant, truncated to the millisecond like the server's timestamps."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def with_offset(instant: str, hours: int, minutes: int = 0) -> str:
    zone = timezone(timedelta(hours=hours, minutes=minutes))
    return datetime.fromisoformat(instant).astimezone(zone).isoformat(timespec="milliseconds")


def four_versions(client: httpx.Client, uid: str) -> dict[str, Any]:
    """Create, update, update, delete: the life of one Patient."""
    first = create(client, patient(uid, "One"))
    second = update(client, first, name=[{"family": "Two"}])
    update(client, second, name=[{"family": "Three"}])
    delete(client, first)
    return first


# -- instance history and vread ---------------------------------------------------------------------------


def test_instance_history_lists_every_version_newest_first(client, uid):
    resource_id = four_versions(client, uid)["id"]
    bundle = history(client, f"/Patient/{resource_id}/_history")
    entries = bundle["entry"]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "PUT", "POST"]
    assert [e["request"]["url"] for e in entries] == [f"Patient/{resource_id}"] * 3 + ["Patient"]
    assert etags(bundle) == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    statuses = [e["response"]["status"].split()[0] for e in entries]
    assert statuses[1:] == ["200", "200", "201"]
    assert statuses[0] in ("200", "204")
    assert "resource" not in entries[0]
    assert [e["resource"]["name"][0]["family"] for e in entries[1:]] == ["Three", "Two", "One"]
    assert [e["resource"]["meta"]["versionId"] for e in entries[1:]] == ["3", "2", "1"]
    assert all(e["fullUrl"].endswith(f"/Patient/{resource_id}") for e in entries)


def test_vread_returns_each_version_and_410_for_the_deletion(client, uid):
    resource_id = four_versions(client, uid)["id"]
    for version, family in (("1", "One"), ("2", "Two"), ("3", "Three")):
        answer = client.get(f"/Patient/{resource_id}/_history/{version}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["ETag"] == f'W/"{version}"'
        assert (answer.json()["meta"]["versionId"], answer.json()["name"][0]["family"]) == (version, family)
    deletion = client.get(f"/Patient/{resource_id}/_history/4")
    assert deletion.status_code == 410
    assert deletion.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{resource_id}/_history/5").status_code == 404


def test_instance_history_of_an_unknown_id_is_404(client, uid):
    answer = client.get(f"/Patient/never-{uid}/_history")
    assert answer.status_code == 404
    assert answer.json()["resourceType"] == "OperationOutcome"


# -- type and system history --------------------------------------------------------------------------------


def test_type_history_contains_the_resource_and_only_that_type(client, uid):
    start = now()
    created = create(client, patient(uid, "Typed"))
    patients = history(client, "/Patient/_history", _since=start, _count="1000")
    assert any(url.endswith(f"/Patient/{created['id']}") for url in full_urls(patients))
    assert all("/Patient/" in url for url in full_urls(patients))
    observations = history(client, "/Observation/_history", _since=start, _count="1000")
    assert not any(url.endswith(f"/{created['id']}") for url in full_urls(observations))


def test_system_history_since_includes_writes_of_every_type(client, uid):
    start = now()
    subject = create(client, patient(uid, "System"))
    observation = create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Outcome Rating Scale total"},
            "subject": {"reference": f"Patient/{subject['id']}"},
        },
    )
    bundle = history(client, "/_history", _since=start, _count="1000")
    urls = full_urls(bundle)
    assert any(url.endswith(f"/Patient/{subject['id']}") for url in urls)
    assert any(url.endswith(f"/Observation/{observation['id']}") for url in urls)
    floor = datetime.fromisoformat(start)
    assert all(datetime.fromisoformat(e["response"]["lastModified"]) >= floor for e in bundle["entry"])


# -- _since, _at, _count ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [None, (5, 30), (-7, 0)], ids=["as-served", "plus-0530", "minus-0700"])
def test_since_excludes_versions_written_before_the_instant(client, uid, offset):
    first = create(client, patient(uid, "Before"))
    second = update(client, first, name=[{"family": "After"}])
    since = second["meta"]["lastUpdated"]
    if offset is not None:
        since = with_offset(since, *offset)
    instance = history(client, f"/Patient/{first['id']}/_history", _since=since)
    assert etags(instance) == ['W/"2"']
    typed = history(client, "/Patient/_history", _since=since, _count="1000")
    assert etags({"entry": [e for e in typed["entry"] if e["fullUrl"].endswith(first["id"])]}) == ['W/"2"']


def test_since_after_the_last_write_gives_an_empty_history(client, uid):
    created = create(client, patient(uid, "Quiet"))
    later = datetime.fromisoformat(created["meta"]["lastUpdated"]) + timedelta(seconds=1)
    later = later.isoformat(timespec="milliseconds")
    assert etags(history(client, f"/Patient/{created['id']}/_history", _since=later)) == []


def test_at_gives_the_version_current_at_that_instant(client, uid):
    first = create(client, patient(uid, "First"))
    second = update(client, first, name=[{"family": "Second"}])
    path = f"/Patient/{first['id']}/_history"
    assert etags(history(client, path, _at=first["meta"]["lastUpdated"])) == ['W/"1"']
    assert etags(history(client, path, _at=second["meta"]["lastUpdated"])) == ['W/"2"']
    before = datetime.fromisoformat(first["meta"]["lastUpdated"]) - timedelta(seconds=1)
    assert etags(history(client, path, _at=before.isoformat(timespec="milliseconds"))) == []


@pytest.mark.parametrize("page_size", [1, 2])
def test_count_pages_through_every_version_exactly_once(client, uid, page_size):
    current = create(client, patient(uid, "v1"))
    for n in range(2, 6):
        current = update(client, current, name=[{"family": f"v{n}"}])
    seen: list[str] = []
    bundle = history(client, f"/Patient/{current['id']}/_history", _count=str(page_size))
    pages = 1
    while True:
        assert 1 <= len(bundle["entry"]) <= page_size
        seen.extend(etags(bundle))
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        answer = client.get(following[0])
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        pages += 1
    assert seen == ['W/"5"', 'W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert pages == -(-5 // page_size)


@pytest.mark.parametrize("param", ["_since", "_at"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-01-01T25:00:00Z", "2024-01-01T10:00:00+99:00"])
@pytest.mark.parametrize("level", ["system", "type", "instance"])
def test_malformed_since_or_at_is_400(client, uid, param, value, level):
    path = {"system": "/_history", "type": "/Patient/_history"}.get(level)
    if path is None:
        path = f"/Patient/{create(client, patient(uid, 'Bad'))['id']}/_history"
    answer = client.get(path, params={param: value})
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] in ("value", "invalid")

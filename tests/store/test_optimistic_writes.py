"""Creates that run before the writer's turn (Repository.write(optimistic=True), SQLite; on PostgreSQL the same
calls take the ordinary path and must behave the same): the answer and the stored rows carry the time of the
writer's turn (no placeholder leaks), lastUpdated follows the order of commits, a replayed submission sent
concurrently is stored once, and work that needs more than the reads it may make before the turn, or whose
guarded writes meet a conflict, is run again the ordinary way."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from fhir_server.errors import FhirError
from fhir_server.store.session import WriteSession
from fhir_server.store.write_group import _Entry
from tests.api.fhir import post
from tests.scoring.test_pipeline import srs
from tests.store.test_write_session import _basic, repo  # noqa: F401  (the module's repository fixture)


def _placeholder_free(text: str) -> bool:
    return "9999-" not in text


def test_a_scored_create_carries_the_time_of_the_writers_turn(client, uid):
    # A server's first scored submissions store and then find the scoring Device, which needs the writer: warm
    # that up, so the submission checked here is one that ran before the writer's turn.
    for warm in range(2):
        warmed = post(client, "/QuestionnaireResponse", srs(f"{uid}-{warm}", (80, 70, 90, 85), "2026-03-01T10:00:00Z"))
        assert warmed.status_code == 201, warmed.text
    before = datetime.now(UTC) - timedelta(seconds=1)
    response = post(client, "/QuestionnaireResponse", srs(uid, (80, 70, 90, 85), "2026-03-01T10:00:00Z"))
    assert response.status_code == 201, response.text
    body = response.json()
    stamped = body["meta"]["lastUpdated"]
    assert _placeholder_free(response.text) and _placeholder_free(response.headers["Last-Modified"])
    when = datetime.fromisoformat(stamped.replace("Z", "+00:00"))
    assert before <= when <= datetime.now(UTC) + timedelta(seconds=1)
    assert client.get(f"/QuestionnaireResponse/{body['id']}").json()["meta"]["lastUpdated"] == stamped
    # what scoring wrote in the same transaction has the same time, in its content and in its index rows
    provenance = client.get("/Provenance", params={"entity": f"QuestionnaireResponse/{body['id']}"}).json()
    (entry,) = provenance["entry"]
    assert entry["resource"]["recorded"] == stamped and entry["resource"]["meta"]["lastUpdated"] == stamped
    found = client.get("/Provenance", params={"recorded": stamped, "entity": f"QuestionnaireResponse/{body['id']}"})
    assert len(found.json().get("entry", [])) == 1
    observations = client.get("/Observation", params={"derived-from": f"QuestionnaireResponse/{body['id']}"}).json()
    assert [e["resource"]["meta"]["lastUpdated"] for e in observations["entry"]] == [stamped]
    assert (
        client.get("/QuestionnaireResponse", params={"_id": body["id"], "_lastUpdated": stamped}).json()["total"] == 1
    )


def test_the_same_submission_sent_concurrently_is_stored_once(client, uid):
    response = srs(uid, (80, 70, 90, 85), "2026-03-01T10:00:00Z")
    response["identifier"] = {"system": "urn:test:launch", "value": uid}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(client, "/QuestionnaireResponse", response), range(8)))
    assert sorted({a.status_code for a in answers}) in ([200, 201], [201])
    assert len({a.json()["id"] for a in answers}) == 1
    stored = client.get("/QuestionnaireResponse", params={"identifier": f"urn:test:launch|{uid}"}).json()
    assert stored["total"] == 1
    assert client.get("/Observation", params={"patient": uid}).json()["total"] == 1


def test_concurrent_creates_are_stamped_in_commit_order(client, uid, backend):
    def create(n: int) -> httpx.Response:
        return post(client, "/Basic", {"resourceType": "Basic", "code": {"text": f"{uid}-{n}"}})

    with ThreadPoolExecutor(8) as pool:
        assert all(r.status_code == 201 for r in pool.map(create, range(40)))
    history = client.get("/Basic/_history", params={"_count": "40"}).json()  # newest commit first
    stamps = [e["resource"]["meta"]["lastUpdated"] for e in history["entry"]]
    assert all(_placeholder_free(s) for s in stamps)
    if backend == "sqlite":  # one writer at a time, each stamped in its turn (PostgreSQL's writers overlap)
        assert stamps == sorted(stamps, reverse=True)


def test_work_needing_more_than_those_reads_runs_as_the_writer(repo):  # noqa: F811
    rid = f"opt-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_basic("one", rid), rid))

    def update(session):  # reads the current version: not one of the reads made before the turn
        return session.update(_basic("two", rid), rid).stored

    stored = repo.write(update, optimistic=True)
    assert stored.version_id == 2 and stored.last_updated.year < 9999
    assert repo.read("Basic", rid).version_id == 2


def test_a_stale_rewrite_made_before_the_writers_turn_is_refused(repo):  # noqa: F811
    rid = f"opt-stale-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_basic("one", rid), rid))
    stale = repo.read("Basic", rid)
    repo.write(lambda s: s.update(_basic("two", rid), rid))
    with pytest.raises(FhirError) as raised:
        repo.write(lambda s: s.rewrite(stale, _basic("from the stale read", rid)), optimistic=True)
    assert raised.value.status == 409
    assert '"two"' in (repo.read("Basic", rid).content or "")


def test_an_optimistic_create_returns_what_was_stored(repo):  # noqa: F811
    rid = f"opt-create-{uuid.uuid4().hex[:12]}"
    result = repo.write(lambda s: s.create(_basic("one", rid), rid), optimistic=True)
    stored = repo.read("Basic", rid)
    assert (result.stored.last_updated, result.stored.content) == (stored.last_updated, stored.content)
    assert _placeholder_free(result.stored.content or "") and result.stored.last_updated.year < 9999


def _prepared(repo, work):  # noqa: F811
    """A session whose work ran on reads outside the writer's turn, its writes queued (as Repository.write
    prepares them before handing them to the write group)."""
    with repo.engine.connect() as reads:
        session = WriteSession(lambda: reads, repo.indexer, reads=reads)
        work(session)
    return session


def test_a_conflict_in_a_group_undoes_only_that_sessions_writes(repo):  # noqa: F811
    good_id, stale_id = f"grp-{uuid.uuid4().hex[:12]}", f"grp-stale-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_basic("one", stale_id), stale_id))
    stale = repo.read("Basic", stale_id)
    first = _prepared(repo, lambda s: s.create(_basic("first", good_id), good_id))
    conflicting = _prepared(
        repo,
        lambda s: (
            s.create(_basic("lost", f"{stale_id}-x"), f"{stale_id}-x"),
            s.rewrite(stale, _basic("from the stale read", stale_id)),
        ),
    )
    last = _prepared(repo, lambda s: s.create(_basic("last", f"{good_id}-2"), f"{good_id}-2"))
    repo.write(lambda s: s.update(_basic("two", stale_id), stale_id))  # a concurrent writer got there first
    index_rows = _index_rows(repo, stale_id)
    entries = [_Entry(first), _Entry(conflicting), _Entry(last)]
    repo._group._queued.extend(entries)
    repo._group._lead()  # one transaction, a savepoint each
    assert [e.sent for e in entries] == [True, False, True] and all(e.done.is_set() for e in entries)
    assert repo.read("Basic", good_id) is not None and repo.read("Basic", f"{good_id}-2") is not None
    assert repo.read("Basic", f"{stale_id}-x") is None  # the conflicting session wrote nothing
    assert '"two"' in (repo.read("Basic", stale_id).content or "")
    assert _index_rows(repo, stale_id) == index_rows > 0  # its index rows were dropped, then restored


def _index_rows(repo, resource_id: str) -> int:  # noqa: F811
    with repo.engine.connect() as conn:
        statement = text("SELECT count(*) FROM idx_token WHERE resource_type = 'Basic' AND resource_id = :id")
        return conn.execute(statement, {"id": resource_id}).scalar()

"""Write-transaction guarantees of the batched writes (store/session.py, store/batch.py), on both databases: a
rewrite based on what the transaction read is written only if nothing changed it since (the scoring pipeline
closes earlier Flags this way, without a locked re-read), and reads inside a transaction see its queued writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fhir_server.canonical import FLAGS_CODESYSTEM, MEASURES_CODESYSTEM
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import default_registry
from fhir_server.store import clinical
from fhir_server.store.engine import build_engine
from fhir_server.store.migrate import upgrade
from fhir_server.store.repository import Repository


@pytest.fixture(scope="module")
def repo(database_url: str) -> Iterator[Repository]:
    upgrade(database_url)
    engine = build_engine(Settings(database_url=database_url, _env_file=None))
    yield Repository(engine, SearchIndexer(default_registry()), write_retries=1)
    engine.dispose()


def _basic(text: str, resource_id: str) -> dict:
    return {"resourceType": "Basic", "id": resource_id, "code": {"text": text}}


def test_a_rewrite_from_a_stale_read_never_overwrites_a_newer_version(repo):
    rid = f"stale-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_basic("one", rid), rid))
    stale = repo.read("Basic", rid)
    repo.write(lambda s: s.update(_basic("two", rid), rid))  # a concurrent writer got there first
    with pytest.raises(FhirError) as raised:
        repo.write(lambda s: s.rewrite(stale, _basic("from the stale read", rid)))
    assert raised.value.status == 409  # retried, still stale: the conflict answer, nothing written
    current = repo.read("Basic", rid)
    assert current.version_id == 2 and '"two"' in (current.content or "")


def test_a_rewrite_from_a_current_read_lands_as_the_next_version(repo):
    rid = f"fresh-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_basic("one", rid), rid))

    def work(session):
        current = session.current("Basic", rid)
        return session.rewrite(current, _basic("two", rid)).stored

    assert repo.write(work).version_id == 2
    assert repo.vread("Basic", rid, 1) is not None and '"two"' in (repo.read("Basic", rid).content or "")


def test_reads_in_a_transaction_see_its_queued_writes(repo):
    rid = f"queued-{uuid.uuid4().hex[:12]}"

    def work(session):
        session.create(_basic("one", rid), rid)
        current = session.current("Basic", rid)  # sends the queued rows first
        session.rewrite(current, _basic("two", rid))
        return session.version("Basic", rid, 2)

    assert repo.write(work).version_id == 2
    assert repo.read("Basic", rid).version_id == 2


def _observation(subject: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": MEASURES_CODESYSTEM, "code": "srs-total"}]},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 30, "unit": "{score}"},
    }


def _scoring_read(subject: str) -> clinical.ScoringRead:
    measure = (MEASURES_CODESYSTEM, "srs-total", "self", datetime(2030, 1, 1, tzinfo=UTC), 6, False)
    return ("Patient", subject), measure, (FLAGS_CODESYSTEM, ["srs-below-cutoff"], "self"), None


def test_a_scoring_read_asked_with_the_replay_check_is_answered_from_that_round_trip(repo, monkeypatch):
    subject = f"ahead-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_observation(subject, "2026-03-01T10:00:00Z"), f"{subject}-1"))
    read = _scoring_read(subject)

    def read_again(*args):
        raise AssertionError("the scoring read went to the database a second time")

    def work(session):
        found = session.find_by_token(
            "QuestionnaireResponse", "identifier", "urn:x", subject, limit=2, scoring_read=read
        )
        with monkeypatch.context() as patched:
            patched.setattr(clinical, "scoring_context", read_again)
            context = session.scoring_context(*read)
        return found, context

    found, context = repo.write(work)
    assert found == [] and [s.id for s in context.history] == [f"{subject}-1"]


def test_a_scoring_read_asked_ahead_is_read_again_after_the_transaction_writes_what_it_reads(repo):
    subject = f"ahead-{uuid.uuid4().hex[:12]}"
    repo.write(lambda s: s.create(_observation(subject, "2026-03-01T10:00:00Z"), f"{subject}-1"))
    read = _scoring_read(subject)

    def work(session):
        session.find_by_token("QuestionnaireResponse", "identifier", "urn:x", subject, limit=2, scoring_read=read)
        session.create(_observation(subject, "2026-03-08T10:00:00Z"), f"{subject}-2")
        return session.scoring_context(*read)

    assert [s.id for s in repo.write(work).history] == [f"{subject}-2", f"{subject}-1"]

    def other_question(session):  # a different read is not answered by the one asked ahead
        session.find_by_token("QuestionnaireResponse", "identifier", "urn:x", subject, limit=2, scoring_read=read)
        return session.scoring_context(*_scoring_read(f"{subject}-nobody"))

    assert repo.write(other_question).history == []

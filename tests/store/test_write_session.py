"""Write-transaction guarantees of the batched writes (store/session.py, store/batch.py), on both databases: a
rewrite based on what the transaction read is written only if nothing changed it since (the scoring pipeline
closes earlier Flags this way, without a locked re-read), and reads inside a transaction see its queued writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import default_registry
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

"""PostgreSQL's read pool (store/engine.py): a read by id stays prepared and reuses its generic plan (a primary-key
look-up whatever the id: re-planning it cost ~25 µs of PostgreSQL's CPU per read, a third of its cost), while a
search is never prepared there, so each is planned for its own values (a generic plan made for "any patient" was
3 times slower for the clinician search)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from fhir_server.config import Settings
from fhir_server.search.query import parse_search
from fhir_server.search.registry import default_registry
from fhir_server.store.engine import build_engine, build_read_engine
from fhir_server.store.migrate import upgrade
from fhir_server.store.repository import Repository
from tests.support.databases import POSTGRES_ENV, postgres_admin_url, postgres_database

pytestmark = pytest.mark.skipif(postgres_admin_url() is None, reason=f"PostgreSQL half skipped: {POSTGRES_ENV} unset")


@pytest.fixture
def repository() -> Iterator[Repository]:
    from fhir_server.search.indexer import SearchIndexer

    with postgres_database(postgres_admin_url() or "") as url:
        upgrade(url)
        settings = Settings(database_url=url, db_pool_size=1, _env_file=None)
        engine = build_engine(settings)
        read_engine = build_read_engine(settings, engine)
        # one connection in the read pool, so its prepared statements are the ones looked at
        read_engine.pool._max_overflow = 0  # type: ignore[attr-defined]
        repo = Repository(engine, SearchIndexer(default_registry()), read_engine=read_engine)
        try:
            yield repo
        finally:
            read_engine.dispose()
            engine.dispose()


def test_reads_by_id_keep_their_generic_plan_and_searches_are_planned_for_their_values(repository):
    ids = [uuid.uuid4().hex for _ in range(12)]
    repository.write(lambda s: [s.create({"resourceType": "Patient", "gender": "other"}, i) for i in ids])
    registry = default_registry()
    for number, resource_id in enumerate(ids):
        assert repository.read("Patient", resource_id) is not None
        query = parse_search("Patient", [("_id", resource_id), ("gender", "other")], registry)
        assert [s.id for s in repository.search(query).matches] == [resource_id], number
    with repository.read_engine.connect() as conn:
        driver = conn.connection.driver_connection
        prepared = driver.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        ).fetchall()
    reads = [(g, c) for statement, g, c in prepared if "FROM resources WHERE resource_type" in statement]
    assert reads, "a read by id is prepared"
    generic, custom = reads[0]
    assert generic >= len(ids) - 5 and custom <= 5, (generic, custom)  # PostgreSQL tries 5 custom plans first
    assert not [s for s, _, _ in prepared if "idx_token" in s], "a search is never prepared on the read pool"

"""The load of bench/search.py (and bench/export.py, bench/reporting.py): the rows the server itself would write,
straight into PostgreSQL by COPY.

The stored JSON from ``with_meta``, the ``resources`` and ``resource_versions`` rows and the idx_* rows from the
server's ``SearchIndexer`` (with the library's SearchParameters, e.g. Flag status; the reporting index too), by 2
processes.  Secondary indexes are dropped for the load and rebuilt from their own definitions afterwards, then
VACUUM ANALYZE.  What is loaded is a ``Source``: bench/search_data.py's patients by default.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Any

import psycopg

from bench.common import progress
from bench.search_data import observation_counts, plan_patient, resources_of
from fhir_server.config import Settings
from fhir_server.library.discover import discover
from fhir_server.search.custom import from_resource
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import default_registry
from fhir_server.store.migrate import upgrade
from fhir_server.store.records import utc_now
from fhir_server.store.repository import with_meta
from fhir_server.store.tables import INDEX_TABLES

RESOURCE_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "deleted", "content"]
VERSION_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "method", "deleted", "content"]
INDEX_COLUMNS = {kind: [c.name for c in t.columns] for kind, t in INDEX_TABLES.items()}
LOADED_TABLES = ["resources", "resource_versions", *(f"idx_{kind}" for kind in INDEX_TABLES)]
_worker: dict[str, Any] = {}
Rows = list[tuple[str, str, dict]]  # (resource type, id, resource)


@dataclass(frozen=True)
class Source:
    """A data set to load, as module-level functions (the loading processes are handed them): how many Observations
    each unit (a patient, a client) gets, a batch of units' rows with what the benchmark learns from them to check
    its answers (``collect`` of ``load`` receives it, in the loading process), and rows that belong to no unit."""

    counts: Callable[[int, int, int], list[int]]  # (seed, observations, units) → Observations per unit
    batch_rows: Callable[[int, int, list[int]], tuple[Rows, Any]]  # (seed, first unit, counts) → rows, facts
    fixed_rows: Callable[[int], Rows] | None = None  # (seed) → rows written first (organisations, clinicians)


def _search_batch(seed: int, first: int, counts: list[int]) -> tuple[Rows, None]:
    rows = []
    for offset, n_obs in enumerate(counts):
        rows.extend(resources_of(first + offset, plan_patient(seed, first + offset, n_obs)))
    return rows, None


SEARCH = Source(observation_counts, _search_batch)


def _indexer() -> SearchIndexer:
    """The server's indexer, with the SearchParameter resources of the server's library (it stores them when it
    starts and indexes every later write with them; R4 has no search parameter for Flag.status)."""
    settings = Settings()
    library = discover(settings.library_paths(), settings.content_pack_paths())
    custom = [
        param
        for _, resource in library.resources()
        if resource.get("resourceType") == "SearchParameter" and resource.get("status") != "retired"
        for param in from_resource(resource)
    ]
    registry = default_registry()
    registry.set_custom(custom)
    return SearchIndexer(registry)


def _init_worker(url: str) -> None:
    _worker["indexer"] = _indexer()
    _worker["conn"] = psycopg.connect(url)
    _worker["conn"].execute("SET synchronous_commit = off")


def _write(conn: psycopg.Connection, rows: list[tuple[str, str, dict]], indexer: SearchIndexer) -> dict[str, int]:
    """Current and version rows and index rows, as the server writes them, by COPY; one transaction."""
    now = utc_now()
    current, versions, index = [], [], {kind: [] for kind in INDEX_TABLES}
    for rtype, rid, resource in rows:
        content = with_meta(resource, rid, 1, now)
        current.append((rtype, rid, 1, now, False, content))
        versions.append((rtype, rid, 1, now, "POST", False, content))
        for kind, found in indexer.index_rows(rtype, resource).items():
            columns = INDEX_COLUMNS[kind][2:]
            index[kind].extend((rtype, rid, *(r[c] for c in columns)) for r in found)
    copies = [("resources", RESOURCE_COLUMNS, current), ("resource_versions", VERSION_COLUMNS, versions)]
    copies += [(f"idx_{kind}", INDEX_COLUMNS[kind], found) for kind, found in index.items() if found]
    with conn.cursor() as cur:
        for name, columns, data in copies:
            with cur.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in data:
                    copy.write_row(row)
    conn.commit()
    return {name: len(data) for name, _, data in copies}


def _load_batch(task: tuple[Source, int, int, list[int]]) -> tuple[int, dict[str, int], Any]:
    source, seed, first, counts = task
    rows, facts = source.batch_rows(seed, first, counts)
    return sum(counts), _write(_worker["conn"], rows, _worker["indexer"]), facts


def _run_sql(args: tuple[str, str]) -> tuple[str, float]:
    url, sql = args
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET max_parallel_maintenance_workers = 0")  # two statements at once already use both cores
        conn.execute(sql)
    return sql, time.perf_counter() - started


def load(
    url: str,
    seed: int,
    observations: int,
    patients: int,
    batch: int,
    source: Source = SEARCH,
    collect: Callable[[Any], None] | None = None,
) -> dict:
    """Load ``source``'s data for ``patients`` units; ``collect`` is given each batch's facts as it is written."""
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # Secondary indexes are rebuilt after the load from their own definitions (sorting beats 50M random
        # B-tree inserts); primary keys and the version unique constraint stay.
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%s) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            (LOADED_TABLES,),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
    counts = source.counts(seed, observations, patients)
    tasks = [(source, seed, first, counts[first : first + batch]) for first in range(0, patients, batch)]
    totals: dict[str, int] = {}
    done, started = 0, time.perf_counter()
    if source.fixed_rows is not None:
        with psycopg.connect(url) as conn:
            totals = _write(conn, source.fixed_rows(seed), _indexer())
    progress("loading", 0, observations)
    with Pool(2, initializer=_init_worker, initargs=(url,)) as pool:
        for loaded, written, facts in pool.imap_unordered(_load_batch, tasks):
            if collect is not None:
                collect(facts)
            done += loaded
            for name, n in written.items():
                totals[name] = totals.get(name, 0) + n
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (observations - done) if done else 0
            progress(f"loading, {eta / 60:4.1f} min left", done, observations)
    rows_seconds = time.perf_counter() - started

    print(f"rebuilding {len(indexes)} indexes, then VACUUM ANALYZE ...", flush=True)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:  # biggest first, so the two processes finish together
        sizes = dict(conn.execute("SELECT relname, pg_relation_size(oid) FROM pg_class").fetchall())
    ordered = sorted(indexes, key=lambda i: -sizes.get(re.search(r" ON public\.(\w+)", i[1]).group(1), 0))
    with Pool(2) as pool:
        built = pool.map(_run_sql, [(url, definition) for _, definition in ordered], chunksize=1)
        index_seconds = time.perf_counter() - started
        started = time.perf_counter()
        pool.map(_run_sql, [(url, f"VACUUM (ANALYZE) {name}") for name in sorted(LOADED_TABLES, key=sizes.get)])
    vacuum_seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        by_type = dict(conn.execute("SELECT resource_type, count(*) FROM resources GROUP BY 1").fetchall())
        database_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        # The run's secret key (bench/common.py) too: a kept database's stored secrets (the signing key) open only
        # with it, and its data is synthetic.
        secret = os.environ["FHIR_SERVER_SECRET_KEY"]
        meta = json.dumps({"seed": seed, "observations": observations, "patients": patients, "secret_key": secret})
        conn.execute(f"COMMENT ON DATABASE \"{url.rpartition('/')[2]}\" IS '{meta}'")
    index_rows = sum(n for name, n in totals.items() if name.startswith("idx_"))
    total_seconds = rows_seconds + index_seconds + vacuum_seconds
    return {
        "resources": by_type,
        "index_rows": {name: n for name, n in totals.items() if name.startswith("idx_")},
        "index_rows_per_resource": round(index_rows / sum(by_type.values()), 1),
        "rows_seconds": round(rows_seconds, 1),
        "index_build_seconds": round(index_seconds, 1),
        "slowest_index_builds": {
            re.search(r"INDEX (\w+)", sql).group(1): round(t, 1) for sql, t in sorted(built, key=lambda b: -b[1])[:4]
        },
        "vacuum_analyze_seconds": round(vacuum_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "observations_per_second": round(observations / total_seconds),
        "index_rows_per_second_during_copy": round(index_rows / rows_seconds),
        "database_gb": round(database_bytes / 1e9, 2),
    }

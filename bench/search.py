"""Search benchmark: the product's searches over PostgreSQL holding up to 1,000,000 Observations.

Scenario (see bench/README.md): a fresh PostgreSQL database loaded straight through COPY (loading through HTTP
would take hours) with the rows the server itself would write: ``with_meta`` for the stored JSON and the server's
``SearchIndexer`` (with the library's SearchParameters, e.g. Flag status) for the idx_* rows, by 2 processes.
Secondary indexes are dropped for the load and rebuilt from their own definitions afterwards, then VACUUM ANALYZE.
The data is shaped like the product's: per patient ~100 SRS/ORS total-score Observations (4 item components each)
over 2 years, one QuestionnaireResponse per 10 Observations (their derivedFrom) and 2-5 Flags.  Then
``fhir-server serve`` with 2 workers, the searched relations prewarmed into the OS cache, and per query sequential
requests from one keep-alive client over random patients, each response checked against the generated data, plus
a round of 4 concurrent clients.  Default 500,000 Observations for 5,000 patients (the issue's 1,000,000 for
10,000: ``--observations 1000000 --patients 10000``, a ~28-minute load on the 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.library.discover import discover  # noqa: E402
from fhir_server.search.custom import from_resource  # noqa: E402
from fhir_server.search.indexer import SearchIndexer  # noqa: E402
from fhir_server.search.registry import default_registry  # noqa: E402
from fhir_server.store.migrate import upgrade  # noqa: E402
from fhir_server.store.records import utc_now  # noqa: E402
from fhir_server.store.repository import with_meta  # noqa: E402
from fhir_server.store.tables import INDEX_TABLES  # noqa: E402

START = datetime(2024, 11, 1)  # the data spans two years from here (naive UTC)
WINDOW_MINUTES = 2 * 365 * 24 * 60
OBS_PER_QR = 10
SNOMED, UCUM = "http://snomed.info/sct", "http://unitsofmeasure.org"
MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INSTRUMENTS = {  # id: (SNOMED code, display, item codes)
    "srs": ("720482000", "Session Rating Scale score", ("relationship", "goals-topics", "approach-method", "overall")),
    "ors": ("716613004", "Outcome Rating Scale score", ("individual", "interpersonal", "social", "overall")),
}
QUESTIONNAIRE = "http://fit-fhir.org/fhir/Questionnaire/{}"
FLAG_CODES = ("alliance-concern", "no-improvement", "deterioration", "dropout-risk")
RESOURCE_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "deleted", "content"]
VERSION_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "method", "deleted", "content"]
INDEX_COLUMNS = {kind: [c.name for c in t.columns] for kind, t in INDEX_TABLES.items()}
LOADED_TABLES = ["resources", "resource_versions", *(f"idx_{kind}" for kind in INDEX_TABLES)]
SEARCHED = ["resources", "idx_reference", "idx_token", "idx_date"]  # what the measured queries read


# -- the data: a pure function of (seed, patient number), so checks can regenerate any patient ------------------
@dataclass
class Plan:
    id: str
    observations: list[tuple[str, str, int, tuple[float, ...], str]]  # id, instrument, minute, items, QR id
    responses: list[tuple[str, str, int, list[str]]]  # id, instrument, minute, Observation ids
    flags: list[tuple[str, str, str, int]]  # id, status, code, minute


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def observation_counts(seed: int, observations: int, patients: int) -> list[int]:
    """~N/M per patient, ±40 % in pairs so that the total stays exact."""
    base, extra = divmod(observations, patients)
    counts = [base + (i < extra) for i in range(patients)]
    rng = random.Random(f"{seed}:counts")
    for i in range(0, patients - 1, 2):
        shift = rng.randint(0, int(base * 0.4))
        counts[i], counts[i + 1] = counts[i] + shift, counts[i + 1] - shift
    return counts


def plan_patient(seed: int, number: int, n_obs: int) -> Plan:
    rng = random.Random(f"{seed}:patient:{number}")
    pid = _uuid(rng)
    minutes = sorted(rng.sample(range(WINDOW_MINUTES), n_obs))  # distinct: dates sort without ties
    observations, responses = [], []
    first = rng.randrange(2)
    for block, start in enumerate(range(0, n_obs, OBS_PER_QR)):
        instrument = ("srs", "ors")[(block + first) % 2]
        qid = _uuid(rng)
        obs = [
            (_uuid(rng), instrument, m, tuple(round(rng.uniform(0, 10), 1) for _ in range(4)), qid)
            for m in minutes[start : start + OBS_PER_QR]
        ]
        observations.extend(obs)
        responses.append((qid, instrument, minutes[start] - 5, [o[0] for o in obs]))
    flags = [
        (
            _uuid(rng),
            "active" if rng.random() < 0.4 else "inactive",
            rng.choice(FLAG_CODES),
            rng.randrange(WINDOW_MINUTES),
        )
        for _ in range(rng.randint(2, 5))
    ]
    return Plan(pid, observations, responses, flags)


def _when(minute: int) -> str:
    return (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _score(value: float) -> dict:
    return {"value": round(value, 1), "unit": "{score}", "system": UCUM, "code": "{score}"}


def resources_of(number: int, plan: Plan) -> Iterator[tuple[str, str, dict]]:
    subject = {"reference": f"Patient/{plan.id}"}
    yield (
        "Patient",
        plan.id,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "http://fit-fhir.org/fhir/sid/client-number", "value": f"C{number:07d}"}],
            "name": [{"family": f"Client{number}", "given": ["Alex"]}],
            "gender": ("female", "male", "other")[number % 3],
            "birthDate": f"{1950 + number % 55}-{1 + number % 12:02d}-{1 + number % 28:02d}",
        },
    )
    items = {o[4]: o[3] for o in plan.observations}
    for qid, instrument, minute, _ in plan.responses:
        names = INSTRUMENTS[instrument][2]
        yield (
            "QuestionnaireResponse",
            qid,
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": f"{QUESTIONNAIRE.format(instrument)}|1.0.0",
                "status": "completed",
                "subject": subject,
                "authored": _when(minute),
                "item": [
                    {"linkId": name, "answer": [{"valueDecimal": value}]}
                    for name, value in zip(names, items[qid], strict=True)
                ],
            },
        )
    for oid, instrument, minute, scores, qid in plan.observations:
        code, display, names = INSTRUMENTS[instrument]
        yield (
            "Observation",
            oid,
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}],
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                "subject": subject,
                "effectiveDateTime": _when(minute),
                "issued": _when(minute + 1),
                "valueQuantity": _score(sum(scores)),
                "derivedFrom": [{"reference": f"QuestionnaireResponse/{qid}"}],
                "component": [
                    {
                        "code": {"coding": [{"system": MEASURES, "code": f"{instrument}-{name}"}]},
                        "valueQuantity": _score(v),
                    }
                    for name, v in zip(names, scores, strict=True)
                ],
            },
        )
    for fid, status, code, minute in plan.flags:
        yield (
            "Flag",
            fid,
            {
                "resourceType": "Flag",
                "status": status,
                "category": [
                    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical"}]}
                ],
                "code": {"coding": [{"system": "http://fit-fhir.org/fhir/CodeSystem/fit-flags", "code": code}]},
                "subject": subject,
                "period": {"start": _when(minute)},
            },
        )


# -- loading ---------------------------------------------------------------------------------------------------
_worker: dict[str, Any] = {}


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


def _load_batch(task: tuple[int, int, list[int]]) -> tuple[int, dict[str, int]]:
    seed, first, counts = task
    rows = []
    for offset, n_obs in enumerate(counts):
        rows.extend(resources_of(first + offset, plan_patient(seed, first + offset, n_obs)))
    return sum(counts), _write(_worker["conn"], rows, _worker["indexer"])


def _run_sql(args: tuple[str, str]) -> tuple[str, float]:
    url, sql = args
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET max_parallel_maintenance_workers = 0")  # two statements at once already use both cores
        conn.execute(sql)
    return sql, time.perf_counter() - started


def load(url: str, seed: int, observations: int, patients: int, batch: int) -> dict:
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
    counts = observation_counts(seed, observations, patients)
    tasks = [(seed, first, counts[first : first + batch]) for first in range(0, patients, batch)]
    totals: dict[str, int] = {}
    done, started = 0, time.perf_counter()
    progress("loading", 0, observations)
    with Pool(2, initializer=_init_worker, initargs=(url,)) as pool:
        for loaded, written in pool.imap_unordered(_load_batch, tasks):
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
        meta = json.dumps({"seed": seed, "observations": observations, "patients": patients})
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


# -- the searches, each response checked against the generated data ---------------------------------------------
class CheckFailed(Exception):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _entries(bundle: dict, mode: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def _has_next(bundle: dict) -> bool:
    return any(link["relation"] == "next" for link in bundle.get("link", []))


class Truth:
    """What the database holds, regenerated from the seed on demand."""

    def __init__(self, seed: int, observations: int, patients: int) -> None:
        self.seed, self.patients = seed, patients
        self.counts = observation_counts(seed, observations, patients)
        self._srs: list[tuple[str, int]] | None = None

    def plan(self, number: int) -> Plan:
        return plan_patient(self.seed, number, self.counts[number])

    def srs_responses(self) -> list[tuple[str, int]]:
        """(id, authored minute) of every SRS QuestionnaireResponse, in id order (the server's default order)."""
        if self._srs is None:
            found = []
            for number in range(self.patients):
                found += [(q[0], q[2]) for q in self.plan(number).responses if q[1] == "srs"]
            self._srs = sorted(found)
        return self._srs


Request = tuple[str, list[tuple[str, str]], Callable[[dict], tuple[int, int]]]


def query_a(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    instrument = rng.choice(("srs", "ors"))
    code = INSTRUMENTS[instrument][0]
    newest = [o[0] for o in sorted((o for o in plan.observations if o[1] == instrument), key=lambda o: -o[2])]
    params = [("subject", f"Patient/{plan.id}"), ("code", f"{SNOMED}|{code}"), ("_sort", "-date"), ("_count", "20")]

    def check(bundle: dict) -> tuple[int, int]:
        got = _entries(bundle, "match")
        for r in got:
            _expect(r["subject"]["reference"] == f"Patient/{plan.id}", "an Observation of another patient")
            _expect(r["code"]["coding"][0]["code"] == code, "an Observation with another code")
        dates = [r["effectiveDateTime"] for r in got]
        _expect(dates == sorted(dates, reverse=True), "not sorted by date, newest first")
        _expect([r["id"] for r in got] == newest[:20], "not the patient's 20 newest Observations with that code")
        _expect(_has_next(bundle) == (len(newest) > 20), "next link wrong")
        return len(got), 0

    return "Observation", params, check


def query_b(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    active = {f[0] for f in plan.flags if f[1] == "active"}

    def check(bundle: dict) -> tuple[int, int]:
        _expect(not _entries(bundle, "outcome"), "a parameter was ignored (no Flag status SearchParameter?)")
        got = _entries(bundle, "match")
        _expect(all(r["status"] == "active" for r in got), "an inactive Flag")
        _expect({r["id"] for r in got} == active, "not exactly the patient's active Flags")
        return len(got), 0

    return "Flag", [("patient", plan.id), ("status", "active")], check


def query_c(truth: Truth, rng: random.Random) -> Request:
    day = START + timedelta(minutes=WINDOW_MINUTES) - timedelta(days=rng.randint(1, 60))
    floor = int((day - START).total_seconds() // 60)
    expected = [qid for qid, minute in truth.srs_responses() if minute >= floor][:21]
    canonical = f"{QUESTIONNAIRE.format('srs')}|1.0.0"

    def check(bundle: dict) -> tuple[int, int]:
        got = _entries(bundle, "match")
        _expect(all(r["questionnaire"] == canonical for r in got), "a response to another Questionnaire")
        _expect(all(r["authored"] >= day.strftime("%Y-%m-%d") for r in got), "authored before the date")
        _expect([r["id"] for r in got] == expected[:20], "not the first 20 matching responses")
        _expect(_has_next(bundle) == (len(expected) > 20), "next link wrong")
        return len(got), 0

    return "QuestionnaireResponse", [("questionnaire", canonical), ("authored", f"ge{day:%Y-%m-%d}")], check


def query_d1(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))

    def check(bundle: dict) -> tuple[int, int]:
        _expect([r["id"] for r in _entries(bundle, "match")] == [plan.id], "not the Patient")
        included = _entries(bundle, "include")
        _expect({r["id"] for r in included} == {f[0] for f in plan.flags}, "not exactly the patient's Flags")
        return 1, len(included)

    return "Patient", [("_id", plan.id), ("_revinclude", "Flag:patient")], check


def query_d2(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    page = sorted(plan.responses)[:20]

    def check(bundle: dict) -> tuple[int, int]:
        got, included = _entries(bundle, "match"), _entries(bundle, "include")
        _expect([r["id"] for r in got] == [q[0] for q in page], "not the patient's responses")
        _expect({r["id"] for r in included} == {o for q in page for o in q[3]}, "not the derived Observations")
        return len(got), len(included)

    return (
        "QuestionnaireResponse",
        [("subject", f"Patient/{plan.id}"), ("_revinclude", "Observation:derived-from")],
        check,
    )


CASES = [  # key, what, build, p99 target (ms)
    ("a", "Observation?subject=Patient/X&code=S|C&_sort=-date&_count=20", query_a, 25.0),
    ("b", "Flag?patient=X&status=active", query_b, 25.0),
    ("c", "QuestionnaireResponse?questionnaire=URL&authored=geD", query_c, None),
    ("d1", "Patient?_id=X&_revinclude=Flag:patient", query_d1, None),
    ("d2", "QuestionnaireResponse?subject=Patient/X&_revinclude=Observation:derived-from", query_d2, None),
]


def run_requests(base: str, build: Callable, truth: Truth, count: int, seed: str) -> dict:
    rng = random.Random(seed)
    latencies, matches, included, failures = [], [], [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(count):
            rtype, params, check = build(truth, rng)
            started = time.perf_counter()
            response = client.get(f"/fhir/{rtype}", params=params)
            latencies.append((time.perf_counter() - started) * 1000)
            try:
                _expect(response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}")
                found, extra = check(response.json())
                matches.append(found)
                included.append(extra)
            except (CheckFailed, KeyError, TypeError) as exc:
                failures.append(f"{rtype}?{params}: {exc!r}"[:400])
    return {"latencies": latencies, "matches": matches, "included": included, "failures": failures}


def run_concurrent(base: str, build: Callable, truth: Truth, clients: int, each: int, seed: str) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(lambda k: run_requests(base, build, truth, each, f"{seed}:{k}"), range(clients)))
    elapsed = time.perf_counter() - started
    merged = {key: [v for part in parts for v in part[key]] for key in parts[0]}
    return {**merged, "rate": len(merged["latencies"]) / elapsed}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def summarise(run: dict) -> dict:
    lat, n = run["latencies"], max(len(run["matches"]), 1)
    out = {
        "requests": len(lat),
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
        "matches_mean": round(sum(run["matches"]) / n, 1),
        "included_mean": round(sum(run["included"]) / n, 1),
        "failures": len(run["failures"]),
        "first_failures": run["failures"][:3],
        "latencies_ms": [round(x, 2) for x in lat],  # in request order
    }
    if "rate" in run:
        out["rate"] = round(run["rate"], 1)
    return out


def prewarm(url: str) -> float:
    """Read the searched tables and their indexes once, so the OS cache holds them (the 'warm cache' case)."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        relations = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relname = ANY(%(t)s) UNION ALL "
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "WHERE c.relname = ANY(%(t)s)",
            {"t": SEARCHED},
        ).fetchall()
        for (relation,) in relations:
            conn.execute("SELECT pg_prewarm(%s, 'read')", (relation,))
    return time.perf_counter() - started


def explain(url: str, truth: Truth) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL the server's own search code sends for one request of each query."""
    from sqlalchemy import create_engine, event

    from fhir_server.search.query import parse_search
    from fhir_server.store.engine import normalise_url
    from fhir_server.store.search_sql import search_with_includes

    registry = _indexer().registry
    engine = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    captured: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *a: captured.append((a[2], a[3])))
    out = {}
    with engine.connect() as conn:
        for key, _, build, _ in CASES:
            rtype, params, _ = build(truth, random.Random(f"explain:{key}"))
            captured.clear()
            search_with_includes(conn, parse_search(rtype, params, registry))
            out[key] = []
            for statement, parameters in list(captured):
                lines = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).scalars().all()
                text = "\n".join(lines)
                times = {k: float(v) for k, v in re.findall(r"(Planning|Execution) Time: ([\d.]+) ms", text)}
                buffers = re.search(r"Buffers: (.*)", text)
                out[key].append(
                    {
                        "sql": statement,
                        "parameters": {k: str(v) for k, v in (parameters or {}).items()},
                        "planning_ms": times.get("Planning"),
                        "execution_ms": times.get("Execution"),
                        "buffers": buffers.group(1) if buffers else "",
                        "plan": lines,
                    }
                )
    engine.dispose()
    return out


# -- main -----------------------------------------------------------------------------------------------------
@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if args.database:
        yield args.database
    elif args.keep:
        name = f"fhir_bench_search_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.postgres.rpartition('/')[0]}/{name}"
        try:
            yield url
        finally:
            print(f'database kept: {url}  (reuse: --database {url}; drop: DROP DATABASE "{name}")')
    else:
        with fresh_postgres(args.postgres, "fhir_bench_search") as url:
            yield url


def loaded_scale(url: str) -> dict:
    with psycopg.connect(url) as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
    if not comment:
        raise SystemExit(f"{url} was not loaded by bench/search.py --keep")
    return json.loads(comment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", help="admin database URL")
    # 1,000,000 / 10,000 is the scale, but its load takes ~28 minutes on the 2-core machine: see README
    parser.add_argument("--observations", type=int, default=500_000)
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=20, help="patients per COPY transaction")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per query")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests per query (other patients)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the second round (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database (prints its URL)")
    parser.add_argument("--database", help="search a database loaded earlier with --keep instead of loading")
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN plan, not only missed targets'")
    args = parser.parse_args()

    loaded = None
    with database(args) as url:
        if args.database:
            scale = loaded_scale(url)
        else:
            scale = {"seed": args.seed, "observations": args.observations, "patients": args.patients}
            loaded = load(url, args.seed, args.observations, args.patients, args.batch)
            print(table(["load", "value"], [(k, v) for k, v in loaded.items()]))
        truth = Truth(scale["seed"], scale["observations"], scale["patients"])
        truth.srs_responses()
        print(f"prewarmed the searched relations in {prewarm(url):.1f} s", flush=True)
        results, machine = {}, {"cpus": os.cpu_count(), "loadavg_before_search": os.getloadavg()}
        with start_server(url, args.workers) as server:
            for key, _, build, _ in CASES:
                run_requests(server.root, build, truth, args.warmup, f"warmup:{key}")
            for done, (key, _, build, _) in enumerate(CASES):
                progress("searching", done, len(CASES))
                results[key] = {"sequential": summarise(run_requests(server.root, build, truth, args.requests, key))}
                if args.clients:
                    each = max(args.requests // args.clients, 1)
                    run = run_concurrent(server.root, build, truth, args.clients, each, f"concurrent:{key}")
                    results[key]["concurrent"] = summarise(run)
            progress("searching", len(CASES), len(CASES))
            machine["loadavg_after_search"] = os.getloadavg()
        plans = explain(url, truth)

    rows, failed = [], False
    for key, what, _, target in CASES:
        seq, conc = results[key]["sequential"], results[key].get("concurrent")
        failures = seq["failures"] + (conc["failures"] if conc else 0)
        failed |= failures > 0
        missed = target is not None and seq["p99_ms"] > target
        rows.append(
            (
                f"({key}) {what}",
                seq["matches_mean"],
                seq["included_mean"],
                f"{seq['p50_ms']:.1f}",
                f"{seq['p99_ms']:.1f}",
                f"{seq['max_ms']:.1f}",
                f"{conc['p50_ms']:.1f} / {conc['p99_ms']:.1f} @ {conc['rate']:.0f}/s" if conc else "",
                f"p99 < {target:.0f} ms{' MISSED' if missed else ''}" if target else "",
                "ok" if not failures else f"{failures} FAILED",
            )
        )
    scale_text = f"{scale['observations']:,} Observations, {scale['patients']:,} patients"
    print(f"\n{scale_text}; {args.requests} sequential requests per query (1 client), then {args.clients} clients")
    before, after = (
        " ".join(f"{x:.1f}" for x in machine[k]) for k in ("loadavg_before_search", "loadavg_after_search")
    )
    print(f"load average before / after searching: {before} / {after} on {machine['cpus']} CPUs (incl. this benchmark)")
    print(
        table(
            [
                "query",
                "matches",
                "included",
                "p50 ms",
                "p99 ms",
                "max ms",
                f"{args.clients} clients p50/p99",
                "target",
                "checks",
            ],
            rows,
        )
    )
    explained = []
    for key, statements in plans.items():
        for number, s in enumerate(statements, 1):
            explained.append((f"({key}) #{number}", s["planning_ms"], s["execution_ms"], s["buffers"]))
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the server's SQL, one request per query")
    print(table(["statement", "planning ms", "execution ms", "buffers"], explained))
    for key, _, _, target in CASES:
        if args.plans or (target is not None and results[key]["sequential"]["p99_ms"] > target):
            for s in plans[key]:
                print(f"\n({key}) {s['sql']}\n{s['parameters']}\n" + "\n".join(s["plan"]))
    for key in results:
        for failure in results[key]["sequential"]["first_failures"]:
            print(f"FAILED ({key}): {failure}")

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "scale": scale,
        "load": loaded,
        "machine": machine,
        "queries": results,
        "explain": plans,
        "args": vars(args),
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

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
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import search_rate  # noqa: E402
from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402
from bench.search_load import _indexer, load  # noqa: E402
from bench.search_queries import CASES, CheckFailed, Truth, _expect  # noqa: E402

SEARCHED = ["resources", "idx_reference", "idx_token", "idx_date"]  # what the measured queries read


# -- running the searches and summing up -----------------------------------------------------------------------
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
    scale = json.loads(comment)
    if "secret_key" in scale:  # the servers must open the secrets the load's run stored
        os.environ["FHIR_SERVER_SECRET_KEY"] = scale["secret_key"]
    return scale


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
    rate = parser.add_argument_group("throughput: (a) and (b) beside a read by id (bench/search_rate.py)")
    rate.add_argument("--rate-connections", type=int, default=16, help="closed-loop connections (0: no phase)")
    rate.add_argument("--rate-requests", type=int, default=3000, help="closed-loop requests per query")
    rate.add_argument("--rate-duration", type=int, default=15, help="seconds of open loop at half the rate")
    rate.add_argument("--rounds", type=int, default=1, help="rounds of the throughput phase (ABBA with --baseline)")
    rate.add_argument("--baseline", type=Path, help="another checkout whose server is measured alternately")
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
        rates = {}
        if args.rate_connections:
            baseline = args.baseline.resolve() if args.baseline else None
            rates = search_rate.rounds(url, truth, workers=args.workers, connections=args.rate_connections,
                                       duration=args.rate_duration, count=args.rate_requests,
                                       rounds_=args.rounds, baseline=baseline)  # fmt: skip

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
    if rates:
        print(f"\nthroughput at {args.rate_connections} connections (closed loop), then p50 / p99 at half that rate")
        print(search_rate.summary_table(rates))
        failed |= search_rate.errors(rates) > 0
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
        "throughput": rates,
        "args": vars(args),
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Core benchmark: read by id and transaction ingestion over HTTP, each beside the raw-database rate.

Scenario (see bench/README.md): a fresh PostgreSQL database; the server started as ``fhir-server serve`` with
2 workers; the load generator in other processes (wrk for the throughput ceiling, bench/loadgen.py for open-loop
latency at half that rate).  Reads by id with authorization off, with a Backend Services bearer token (access
checks and an AuditEvent per read), and from a bare FastAPI + psycopg endpoint, in ``--rounds`` rounds; with
``--baseline DIR`` another checkout's server is read alternately in the same rounds (bench/core_reads.py).
Transaction Bundles of 50 Patients + 50 Observations (linked by urn:uuid) sent by
4 concurrent clients.  The raw rates do the same work straight through psycopg (PK SELECTs; the same resource,
version and index rows inserted in one transaction per Bundle) with 2 processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from multiprocessing import Pool
from pathlib import Path
from statistics import median

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402
from bench.core_reads import bare_round, read_round  # noqa: E402
from fhir_server.search.indexer import SearchIndexer  # noqa: E402
from fhir_server.search.registry import default_registry  # noqa: E402
from fhir_server.store.repository import with_meta  # noqa: E402


def bundle_of(size: int, tag: str) -> dict:
    entries = []
    for i in range(size // 2):
        patient_url = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:bench", "value": f"{tag}-{i}"}],
                    "name": [{"family": f"Family{i}", "given": ["Alex"]}],
                    "gender": "female",
                    "birthDate": "1990-04-02",
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "survey",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "720482000"}]},
                    "subject": {"reference": patient_url},
                    "effectiveDateTime": "2026-11-02T10:00:00+00:00",
                    "valueQuantity": {
                        "value": 34.5,
                        "unit": "{score}",
                        "system": "http://unitsofmeasure.org",
                        "code": "{score}",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- reads ------------------------------------------------------------------------------------------------
def seed_patients(base: str, count: int) -> list[str]:
    ids = []
    with httpx.Client(timeout=120) as client:
        for done in range(0, count, 100):
            bundle = bundle_of(200, f"seed{done}")
            bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
            response = client.post(base, json=bundle, headers={"Content-Type": "application/fhir+json"})
            response.raise_for_status()
            ids.extend(e["response"]["location"].split("/")[1] for e in response.json()["entry"])
            progress("seeding patients", done + 100, count)
    return ids


WRK_SCRIPT = """
request = function()
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)])
end
"""


def wrk_throughput(url_root: str, ids: list[str], duration: int, connections: int, token: str | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("ids = {" + ",".join(f'"{i}"' for i in ids[:2000]) + "}\n")
        script.write(WRK_SCRIPT)
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *header, "-s", script.name, url_root],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rate": rate, "requests": requests, "non_2xx": int(errors.group(1)) if errors else 0}


def open_loop_latency(port: int, ids: list[str], rate: float, duration: int, token: str | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", delete=False) as paths:
        paths.write("\n".join(f"/fhir/Patient/{i}" for i in ids[:2000]))
    header = ["--header", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "loadgen.py"),
            "--port",
            str(port),
            "--paths-file",
            paths.name,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--connections",
            "64",
            *header,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(paths.name)
    return json.loads(out)


def _raw_reader(args: tuple[str, list[str], float]) -> int:
    url, ids, duration = args
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            for rid in ids[done % len(ids) : done % len(ids) + 100]:
                conn.execute(
                    "SELECT version_id, last_updated, deleted, content FROM resources "
                    "WHERE resource_type = 'Patient' AND id = %s",
                    (rid,),
                    prepare=True,
                ).fetchone()
                done += 1
    return done


def raw_read_rate(url: str, ids: list[str], duration: int, processes: int = 2) -> float:
    with Pool(processes) as pool:
        counts = pool.map(_raw_reader, [(url, ids, duration)] * processes)
    return sum(counts) / duration


# -- ingestion --------------------------------------------------------------------------------------------
def ingest(base: str, bundles: int, size: int, clients: int) -> dict:
    payloads = [bundle_of(size, f"ingest{i}") for i in range(bundles)]
    done = 0

    def send(payload: dict) -> int:
        nonlocal done
        with httpx.Client(timeout=300) as client:
            response = client.post(base, json=payload, headers={"Content-Type": "application/fhir+json"})
            response.raise_for_status()
        done += 1
        progress("ingesting bundles", done, bundles)
        return len(payload["entry"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        written = sum(pool.map(send, payloads))
    elapsed = time.perf_counter() - started
    return {"resources": written, "seconds": elapsed, "rate": written / elapsed}


def _raw_bundle_rows(bundle: dict, indexer: SearchIndexer) -> tuple[list, list, dict]:
    """The same rows the server writes for a Bundle: current row, version row and index rows per resource."""
    now = datetime.utcnow()
    resources, versions, index = [], [], {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        rid = str(uuid.uuid4())
        content = with_meta(resource, rid, 1, now)
        resources.append((resource["resourceType"], rid, 1, now, False, content))
        versions.append((resource["resourceType"], rid, 1, now, "POST", False, content))
        for kind, rows in indexer.index_rows(resource["resourceType"], resource).items():
            for row in rows:
                index.setdefault(kind, []).append(
                    {"resource_type": resource["resourceType"], "resource_id": rid, **row}
                )
    return resources, versions, index


RESOURCE_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "deleted", "content"]
VERSION_COLUMNS = ["resource_type", "id", "version_id", "last_updated", "method", "deleted", "content"]


def _raw_writer(args: tuple[str, int, int]) -> int:
    url, bundles, size = args
    indexer = SearchIndexer(default_registry())
    prepared = [_raw_bundle_rows(bundle_of(size, f"raw{i}"), indexer) for i in range(bundles)]
    written = 0
    with psycopg.connect(url) as conn:
        for resources, versions, index in prepared:
            with conn.cursor() as cur:  # COPY, the fastest way in, as the server itself uses
                tables = [("resources", RESOURCE_COLUMNS, resources), ("resource_versions", VERSION_COLUMNS, versions)]
                tables += [
                    (f"idx_{kind}", list(rows[0]), [tuple(r.values()) for r in rows]) for kind, rows in index.items()
                ]
                for table, columns, rows in tables:
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            conn.commit()
            written += len(resources)
    return written


def raw_ingest_rate(url: str, bundles: int, size: int, processes: int = 2) -> float:
    started = time.perf_counter()
    with Pool(processes) as pool:
        written = sum(pool.map(_raw_writer, [(url, bundles // processes, size)] * processes))
    return written / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FHIR_SERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per read measurement")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--bundles", type=int, default=100, help="transaction Bundles of --bundle-size entries")
    parser.add_argument("--bundle-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of reads (each code in turn, ABBA order)")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. a git worktree of older code) read alternately"
    )
    args = parser.parse_args()

    codes = {"current": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    reads: dict[str, list[dict]] = {name: [] for name in codes}
    bare: list[dict] = []
    with ExitStack() as stack:
        databases, ids = {}, {}
        for name, code in codes.items():
            databases[name] = stack.enter_context(fresh_postgres(args.postgres, f"fhir_bench_core_{name}"))
            with start_server(databases[name], args.workers, code=code) as server:
                ids[name] = seed_patients(f"{server.root}/fhir", args.patients)
        for number in range(args.rounds):
            order = list(codes) if number % 2 == 0 else list(reversed(codes))
            for name in order:
                print(f"round {number + 1}: {name} code, reads with authorization off and on ...", flush=True)
                reads[name].append(
                    read_round(
                        codes[name],
                        databases[name],
                        ids[name],
                        workers=args.workers,
                        duration=args.duration,
                        connections=args.connections,
                        throughput=wrk_throughput,
                        latency=open_loop_latency,
                    )
                )
            print(f"round {number + 1}: bare FastAPI + psycopg endpoint ...", flush=True)
            bare.append(bare_round(databases["current"], ids["current"], workers=args.workers,
                                   duration=args.duration, connections=args.connections,
                                   throughput=wrk_throughput))  # fmt: skip
        url, current_ids = databases["current"], ids["current"]
        print("raw psycopg reads ...", flush=True)
        raw_read = raw_read_rate(url, current_ids, args.duration)
        with start_server(url, args.workers) as server:
            http_ingest = ingest(f"{server.root}/fhir", args.bundles, args.bundle_size, clients=4)
        print("raw psycopg inserts ...", flush=True)
        raw_ingest = raw_ingest_rate(url, args.bundles, args.bundle_size)

    bare_rate = median([b["rate"] for b in bare])
    rows = []
    for name in codes:
        off = median([r["off"]["rate"] for r in reads[name]])
        on = median([r["on"]["rate"] for r in reads[name]])
        late = reads[name][-1]["latency"]
        missing = sum(max(0, r["reads"] - r["audited"]) for r in reads[name])
        rows += [
            (f"{name}: read by id, authorization off", f"{off:,.0f} req/s", f"{off / bare_rate:.2f} of bare",
             "≥ 0.9 of bare"),
            (f"{name}: read by id, bearer token + audit", f"{on:,.0f} req/s", f"{on / off:.2f} of off",
             "≥ 0.9 of off"),
            (f"{name}: token read p50 / p99 at {late['achieved_rate']:,.0f} req/s",
             f"{late['p50_ms']:.1f} / {late['p99_ms']:.1f} ms", "", "p99 ≤ 20 ms"),
            (f"{name}: AuditEvents stored / token reads answered",
             f"{sum(r['audited'] for r in reads[name]):,} / {sum(r['reads'] for r in reads[name]):,}",
             f"{missing} missing", "none missing"),
        ]  # fmt: skip
    rows += [
        ("read by id, bare FastAPI + psycopg", f"{bare_rate:,.0f} req/s", f"raw {raw_read:,.0f} reads/s", ""),
        (f"transaction ingest ({args.bundle_size}/Bundle)", f"{http_ingest['rate']:,.0f} res/s",
         f"{http_ingest['rate'] / raw_ingest:.2f} of raw ({raw_ingest:,.0f} res/s)", "≥ 5,000 res/s"),
    ]  # fmt: skip
    print()
    print(f"medians of {args.rounds} round(s), {args.connections} connections, {args.workers} workers")
    print(table(["measure", "figure", "fraction", "target"], rows))
    errors = sum(r[k]["non_2xx"] for rs in reads.values() for r in rs for k in ("off", "on"))
    errors += sum(r["latency"]["errors"] for rs in reads.values() for r in rs)
    if errors:
        print(f"WARNING: {errors} requests did not answer 200")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"core-{stamp}.json").write_text(
        json.dumps(
            {
                "reads": reads,
                "bare_read": bare,
                "raw_read": raw_read,
                "ingest": http_ingest,
                "raw_ingest": raw_ingest,
                "args": vars(args),
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()

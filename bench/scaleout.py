"""Scale-out benchmark (issue 24): one server instance against two independent instances on the same PostgreSQL
database, and searches with and without a streaming read replica.

Scenario (bench/README.md): a fresh database; scored SRS submissions (each a QuestionnaireResponse scored into its
Observations, Flags and Provenance in one transaction) and the product's clinician search
(`Observation?subject=…&code=…&_sort=-date&_count=20`), closed loop at 16 connections in all.  "One instance" is
`fhir-server serve --workers 2`; "two instances" is that twice, on two ports, with the connections split between
them (as a load balancer would), every background worker on in both.  The two set-ups are measured alternately,
``--rounds`` times each, in the same run, so the machine's drift shows as spread rather than as a difference.

``--replica``: the run makes its own PostgreSQL primary and a streaming replica (tests/support/pg_cluster.py, the
machine's PostgreSQL binaries) and adds searches through one instance with FHIR_SERVER_READ_REPLICA_URL against
the same instance without it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, start_server, table  # noqa: E402
from bench.scoring import _analyze, loadgen, submissions  # noqa: E402

SEARCH = "/fhir/Observation?subject=Patient/{patient}&code=http://snomed.info/sct|720482000&_sort=-date&_count=20"
WORKERS = {
    "FHIR_SERVER_OUTBOX_WORKER": "true",
    "FHIR_SERVER_EXPORT_WORKER": "true",
    "FHIR_SERVER_SUBSCRIPTION_WORKER": "true",
    "FHIR_SERVER_MESSAGE_WORKER": "true",
    "FHIR_SERVER_TASK_EXPIRY_WORKER": "true",
}


def _split(items: list[dict], parts: int) -> list[list[dict]]:
    return [items[i::parts] for i in range(parts)]


def run_spread(ports: list[int], requests: list[dict], connections: int) -> dict[str, float]:
    """Closed loop over several instances at once: the requests and the connections split evenly, one load
    generator process per instance, all started together.  The rate is all requests over the longest run; the
    p99 is the worst instance's (a client behind the balancer sees either)."""
    share = max(1, connections // len(ports))
    with ThreadPoolExecutor(len(ports)) as pool:
        results = list(
            pool.map(
                lambda job: loadgen(job[0], job[1], "--closed", str(share)),
                zip(ports, _split(requests, len(ports)), strict=True),
            )
        )
    seconds = max(r["seconds"] for r in results)
    return {
        "rate": len(requests) / seconds,
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r.get("errors", 0) for r in results),
    }


@contextmanager
def instances(database_url: str, count: int, workers: int, **settings: str) -> Iterator[list[int]]:
    with ExitStack() as stack:
        servers = [
            stack.enter_context(start_server(database_url, workers, **WORKERS, **settings)) for _ in range(count)
        ]
        yield [s.port for s in servers]


def check_search(port: int, patient: str) -> None:
    """The measured search finds the seeded results (a benchmark of empty answers would measure nothing)."""
    import httpx

    answer = httpx.get(f"http://127.0.0.1:{port}{SEARCH.format(patient=patient)}", timeout=30)
    entries = answer.json().get("entry", []) if answer.status_code == 200 else []
    if not entries:
        raise SystemExit(f"the measured search found nothing ({answer.status_code}): {answer.text[:300]}")


def searches(clients: list[str], count: int) -> list[dict]:
    return [{"method": "GET", "path": SEARCH.format(patient=clients[i % len(clients)])} for i in range(count)]


def measure_instances(database_url: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    seeded = submissions(args.seed_submissions, args.clients, "seed")
    with instances(database_url, 1, args.workers) as ports:
        print(f"  seeding {len(seeded)} scored submissions ...", flush=True)
        run_spread(ports, seeded, args.connections)
    _analyze(database_url)  # statistics, as a live database has them (autovacuum would, after a while)
    patients = sorted({r["body"]["subject"]["reference"].split("/")[1] for r in seeded})
    found: dict[str, list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for count in (1, 2):
            label = "one instance" if count == 1 else "two instances"
            with instances(database_url, count, args.workers) as ports:
                check_search(ports[0], patients[0])
                run_spread(ports, searches(patients, 400), args.connections)  # warm both
                tag = f"r{round_}i{count}"
                scored = run_spread(ports, submissions(args.submissions, args.clients, tag), args.connections)
                searched = run_spread(ports, searches(patients, args.searches), args.connections)
            found.setdefault(f"{label}: scored submissions", []).append(scored)
            found.setdefault(f"{label}: searches", []).append(searched)
            print(
                f"  round {round_ + 1}, {label}: {scored['rate']:.0f} submissions/s, {searched['rate']:.0f} searches/s",
                flush=True,
            )
    return found


def measure_replica(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    # the same throwaway pair the tests use: a primary made with initdb and its replica (pg_basebackup -R)
    from tests.support.pg_cluster import PrimaryWithReplica, server_binaries

    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("--replica needs the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup)")
    found: dict[str, list[dict[str, float]]] = {}
    with PrimaryWithReplica(binaries) as pair:
        seeded = submissions(args.seed_submissions, args.clients, "seed")
        with instances(pair.primary_url, 1, args.workers) as ports:
            print(f"  seeding {len(seeded)} scored submissions on the pair's primary ...", flush=True)
            run_spread(ports, seeded, args.connections)
        _analyze(pair.primary_url)  # replayed on the replica too
        patients = sorted({r["body"]["subject"]["reference"].split("/")[1] for r in seeded})
        setups = (("primary only", {}), ("with the replica", {"FHIR_SERVER_READ_REPLICA_URL": pair.replica_url}))
        for _ in range(args.rounds):
            for label, settings in setups:
                with instances(pair.primary_url, 1, args.workers, **settings) as ports:
                    check_search(ports[0], patients[0])
                    run_spread(ports, searches(patients, 400), args.connections)  # warm
                    searched = run_spread(ports, searches(patients, args.searches), args.connections)
                found.setdefault(f"searches, {label}", []).append(searched)
                print(f"  {label}: {searched['rate']:.0f} searches/s", flush=True)
    return found


def summary(found: dict[str, list[dict[str, float]]]) -> list[tuple]:
    rows = []
    for label, runs in found.items():
        rates = [r["rate"] for r in runs]
        rows.append(
            (
                label,
                " / ".join(f"{r:.0f}" for r in rates),
                f"{statistics.median(rates):.0f}",
                " / ".join(f"{r['p99_ms']:.1f}" for r in runs),
                sum(int(r["errors"]) for r in runs),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per instance")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections in all")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seed-submissions", type=int, default=3000, help="scored before measuring (search data)")
    parser.add_argument("--submissions", type=int, default=1500, help="per measurement")
    parser.add_argument("--searches", type=int, default=6000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of each set-up")
    parser.add_argument("--replica", action="store_true", help="also searches with and without a streaming replica")
    args = parser.parse_args()
    print("scale-out: one instance against two on one PostgreSQL database", flush=True)
    with fresh_postgres(args.postgres, "fhir_bench_scaleout_") as database_url:
        found = measure_instances(database_url, args)
    if args.replica:
        print("read replica: searches through one instance with and without it", flush=True)
        found |= measure_replica(args)
    print(table(["measurement", "per round (req/s)", "median", "p99 per round (ms)", "errors"], summary(found)))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = __import__("time").strftime("%Y%m%d-%H%M%S")
    (out / f"scaleout-{stamp}.json").write_text(json.dumps({"args": vars(args), "found": found}, indent=2))


if __name__ == "__main__":
    main()

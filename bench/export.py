"""Bulk export benchmark: a system ``$export`` of the search benchmark's data set on PostgreSQL, its write rate,
the server's memory, and what an export running costs the scored submissions and reads beside it.

Scenario (see bench/README.md): a fresh PostgreSQL database loaded with bench/search.py's loader (the same rows,
by COPY: default 500,000 Observations for 5,000 patients, plus their ~50,000 QuestionnaireResponses and ~17,500
Flags); ``fhir-server serve`` with 2 workers, authorization off (as every benchmark here), the export worker on and
the export folder in a temporary directory.  Then:

1. **Export alone**: ``GET [base]/$export`` (Prefer: respond-async), the status URL polled every 0.2 s until the
   manifest; the rate is the manifest's resources over the wall time from kick-off to manifest.  Every file is
   fetched over HTTP and its lines counted against the manifest, and the manifest's counts against the database's.
   The server's peak RSS (VmHWM of each worker process, /proc/<pid>/status) before the kick-off and after it.
2. **Load without an export**: for ``--duration`` seconds, a closed loop of scored SRS submissions (bench/scoring.py's
   sessions, ``--connections`` connections) and beside it a closed loop of reads by id of random Observations
   (``--read-connections``), both from this process (bench/loadgen.py's HTTP client).
3. **The same load during exports**: the same, with a system export kicked off at its start and again as soon as
   one finishes (each finished one removed), so an export runs the whole window; its share of the window is
   reported, as are the exports' rates under load.

The targets (issue): ≥ 20,000 resources/s written, memory flat, and the submission and read rates during an export
≥ 0.7 of the rates without.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    MachineTimes,
    Server,
    fresh_postgres,
    postgres_cpu,
    progress,
    start_server,
    table,
)
from bench.loadgen import Request, _send_or_reconnect, percentiles  # noqa: E402
from bench.scoring import _write_out, submissions  # noqa: E402
from bench.search_load import load  # noqa: E402

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
NOT_EXPORTED = ("AuditEvent", "Binary")  # a system export without _type leaves these out (README "Bulk export")


# -- the server's memory ------------------------------------------------------------------------------------------
def memory(pids: list[int]) -> dict[int, dict[str, float]]:
    """VmHWM (peak RSS) and VmRSS in MB of each process, from /proc/<pid>/status."""
    out = {}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        values = {k: v.split()[0] for k, _, v in (line.partition(":") for line in lines) if k in ("VmHWM", "VmRSS")}
        out[pid] = {"hwm_mb": int(values["VmHWM"]) / 1024, "rss_mb": int(values["VmRSS"]) / 1024}
    return out


# -- one export, as a client runs it --------------------------------------------------------------------------
def run_export(client: httpx.Client, poll: float, label: str | None = None) -> dict:
    """Kick off a system export, poll until the manifest; the wall time and the manifest.  With ``label`` a
    progress bar over the resources written (the status answer's X-Progress, as the server words it)."""
    started = time.perf_counter()
    answer = client.get("/fhir/$export", headers=ASYNC)
    if answer.status_code != 202:
        raise RuntimeError(f"kick-off answered {answer.status_code}: {answer.text[:300]}")
    url = answer.headers["Content-Location"]
    while True:
        status = client.get(url, headers={"Accept": "application/json"})
        if status.status_code == 200:
            seconds = time.perf_counter() - started
            manifest = status.json()
            break
        if status.status_code != 202:
            raise RuntimeError(f"status answered {status.status_code}: {status.text[:300]}")
        if label:
            print(f"\r{label}: {status.headers.get('X-Progress', '')[:70]:<70}", end="", flush=True)
        time.sleep(poll)
    if label:
        print()
    total = sum(int(item["count"]) for item in manifest.get("output", []))
    return {"url": url, "seconds": seconds, "resources": total, "rate": total / seconds, "manifest": manifest}


def fetch_files(client: httpx.Client, manifest: dict) -> dict:
    """Every output file over HTTP, its lines counted against the manifest's count."""
    started, size, wrong = time.perf_counter(), 0, []
    outputs = manifest.get("output", [])
    for done, item in enumerate(outputs):
        progress("fetching files", done, len(outputs))
        lines = 0
        with client.stream("GET", item["url"], headers={"Accept": "application/fhir+ndjson"}) as response:
            if response.status_code != 200:
                wrong.append(f"{item['type']}: HTTP {response.status_code}")
                continue
            for chunk in response.iter_bytes(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
        if lines != int(item["count"]):
            wrong.append(f"{item['type']}: {lines} lines, manifest {item['count']}")
    progress("fetching files", len(outputs), len(outputs))
    seconds = time.perf_counter() - started
    return {"bytes": size, "seconds": seconds, "mb_per_s": size / 1e6 / seconds if seconds else 0.0, "wrong": wrong}


def database_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT resource_type, count(*) FROM resources WHERE NOT deleted GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {rtype: n for rtype, n in rows if rtype not in NOT_EXPORTED}


# -- the load beside it -------------------------------------------------------------------------------------------
async def closed_for(port: int, requests: list[Request], connections: int, seconds: float, cycle: bool) -> dict:
    """``connections`` connections, each sending the next request as soon as the last answered, for ``seconds``
    (or until the requests run out, unless ``cycle``)."""
    deadline = time.perf_counter() + seconds
    numbers = itertools.count()
    latencies: list[float] = []
    errors, ran_out = 0, False

    async def worker() -> None:
        nonlocal errors, ran_out
        connection = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            n = next(numbers)
            if n >= len(requests) and not cycle:
                ran_out = True
                break
            started = time.perf_counter()
            ok, connection = await _send_or_reconnect(connection, "127.0.0.1", port, requests[n % len(requests)])
            errors += not ok
            latencies.append(time.perf_counter() - started)
        connection[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": len(latencies) / elapsed,
        "seconds": elapsed,
        "ran_out": ran_out,
        **percentiles(latencies),
    }


def load_phase(port: int, subs: list[Request], reads: list[Request], args: argparse.Namespace, seconds: float) -> dict:
    async def both() -> list[dict]:
        return await asyncio.gather(
            closed_for(port, subs, args.connections, seconds, cycle=False),
            closed_for(port, reads, args.read_connections, seconds, cycle=True),
        )

    submitted, read = asyncio.run(both())
    return {"submissions": submitted, "reads": read}


def measured_phase(
    server: Server, url: str, subs: list[Request], reads: list[Request], args: argparse.Namespace, exporting: bool
) -> dict:
    """One load window; with ``exporting``, system exports back to back in this thread meanwhile."""
    _write_out(url)  # the load phase before (or the loader) leaves no write-back to this one
    result: dict = {}
    before, database_before, machine_before = server.worker_cpu(), postgres_cpu(), MachineTimes.now()
    runner = threading.Thread(target=lambda: result.update(load_phase(server.port, subs, reads, args, args.duration)))
    started = time.perf_counter()
    runner.start()
    exports, busy = [], 0.0
    with httpx.Client(base_url=server.root, timeout=120) as client:
        while exporting and runner.is_alive():
            kicked = time.perf_counter()
            try:
                done = _export_until(client, args.poll, runner)
            except RuntimeError as exc:
                print(f"  export during the load failed: {exc}")
                break
            busy += time.perf_counter() - kicked
            exports.append(done)
    runner.join()
    window = time.perf_counter() - started
    after, database_after, machine_after = server.worker_cpu(), postgres_cpu(), MachineTimes.now()
    result["server_cpu_s"] = sum(after[p] - before.get(p, 0.0) for p in after)
    if database_before is not None and database_after is not None:
        result["postgres_cpu_s"] = database_after - database_before
    if machine_before and machine_after:
        result["machine"] = machine_after.shares_since(machine_before)
    result["exports"] = exports
    result["export_share"] = min(1.0, busy / window) if exporting else 0.0
    return result


def _export_until(client: httpx.Client, poll: float, runner: threading.Thread) -> dict:
    """An export run to its manifest, or cancelled (DELETE) when the load window ends first; a finished one is
    removed with its files (the disk would fill otherwise)."""
    started = time.perf_counter()
    answer = client.get("/fhir/$export", headers=ASYNC)
    if answer.status_code != 202:
        raise RuntimeError(f"kick-off answered {answer.status_code}: {answer.text[:300]}")
    url = answer.headers["Content-Location"]
    seen = ""
    while runner.is_alive():
        status = client.get(url, headers={"Accept": "application/json"})
        if status.status_code == 200:
            seconds = time.perf_counter() - started
            total = sum(int(item["count"]) for item in status.json().get("output", []))
            client.delete(url)
            return {"finished": True, "seconds": seconds, "resources": total, "rate": total / seconds}
        if status.status_code != 202:
            raise RuntimeError(f"status answered {status.status_code}: {status.text[:300]}")
        seen = status.headers.get("X-Progress", "")
        time.sleep(poll)
    client.delete(url)  # the window is over: cancelled, unfinished
    return {"finished": False, "seconds": time.perf_counter() - started, "progress": seen}


def read_paths(url: str, count: int) -> list[Request]:
    with psycopg.connect(url) as conn:
        ids = conn.execute(
            "SELECT id FROM resources WHERE resource_type = 'Observation' ORDER BY random() LIMIT %s", (count,)
        ).fetchall()
    return [Request("GET", f"/fhir/Observation/{rid}") for (rid,) in ids]


def submission_requests(count: int, clients: int, tag: str) -> list[Request]:
    return [Request(r["method"], r["path"], json.dumps(r["body"]).encode()) for r in submissions(count, clients, tag)]


# -- main -------------------------------------------------------------------------------------------------------
def _change(during: float, without: float) -> str:
    return f"{100 * (during / without - 1):+.0f} %" if without else "n/a"


def _mem(snapshot: dict[int, dict[str, float]]) -> str:
    return ", ".join(f"{m['hwm_mb']:.0f}" for _, m in sorted(snapshot.items())) + " MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", help="admin database URL")
    parser.add_argument("--observations", type=int, default=500_000)
    parser.add_argument("--patients", type=int, help="default: one per 100 Observations (the search benchmark's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=20, help="patients per COPY transaction of the load")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--duration", type=float, default=20, help="seconds of each load window")
    parser.add_argument("--connections", type=int, default=8, help="submission connections (closed loop)")
    parser.add_argument("--read-connections", type=int, default=8, help="read-by-id connections (closed loop)")
    parser.add_argument("--clients", type=int, default=1000, help="clients the submissions are spread over")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between status requests")
    parser.add_argument(
        "--worker-poll",
        type=float,
        default=0.2,
        help="FHIR_SERVER_EXPORT_POLL_SECONDS: how soon an idle export worker sees a kick-off (server default 1)",
    )
    parser.add_argument("--no-load", action="store_true", help="the export alone, without the load windows")
    args = parser.parse_args()
    args.patients = args.patients or max(1, args.observations // 100)

    with (
        fresh_postgres(args.postgres, "fhir_bench_export") as url,
        tempfile.TemporaryDirectory(prefix="fhir-bench-export-") as folder,
    ):
        loaded = load(url, args.seed, args.observations, args.patients, args.batch)
        print(table(["load", "value"], [(k, v) for k, v in loaded.items()]))
        os.environ.update(
            {
                "FHIR_SERVER_EXPORT_WORKER": "true",
                "FHIR_SERVER_EXPORT_DIR": folder,
                "FHIR_SERVER_EXPORT_POLL_SECONDS": str(args.worker_poll),
            }
        )
        with start_server(url, args.workers) as server, httpx.Client(base_url=server.root, timeout=120) as client:
            pids = [server.pid, *sorted(server.worker_cpu())]
            reads = read_paths(url, 5000)
            # warm-up: both workers serve both kinds of request before anything is measured
            warm = load_phase(server.port, submission_requests(400, 100, "w"), reads, args, 3)
            expected = database_counts(url)  # the library the server stored, the warm-up's submissions too
            before = memory(pids)
            cpu_before = server.worker_cpu()
            alone = run_export(client, args.poll, "exporting (alone)")
            cpu_after = server.worker_cpu()
            after = memory(pids)
            exporter = max(cpu_after, key=lambda p: cpu_after[p] - cpu_before.get(p, 0.0))
            files = fetch_files(client, alone["manifest"])
            client.delete(alone["url"])
            counts = {item["type"]: int(item["count"]) for item in alone["manifest"].get("output", [])}
            mismatched = {  # type: (exported, in the database)
                t: (counts.get(t, 0), expected.get(t, 0))
                for t in sorted({*expected, *counts})
                if counts.get(t, 0) != expected.get(t, 0)
            }
            phases = {}
            if not args.no_load:
                cap = int(args.duration * 1000)  # more than the closed loop can submit in the window
                print(f"load without an export: {args.duration:.0f} s ...", flush=True)
                phases["without"] = measured_phase(
                    server, url, submission_requests(cap, args.clients, "b"), reads, args, exporting=False
                )
                print(f"the same load during exports: {args.duration:.0f} s ...", flush=True)
                phases["during"] = measured_phase(
                    server, url, submission_requests(cap, args.clients, "d"), reads, args, exporting=True
                )
            final = memory(pids)

    worker_pids = sorted(p for p in pids if p != server.pid)
    rows = [
        (
            "resources exported (manifest), alone",
            f"{alone['resources']:,} in {alone['seconds']:.1f} s",
            "",
        ),
        ("export rate: resources / (kick-off → manifest)", f"{alone['rate']:,.0f}/s", "≥ 20,000/s"),
        (
            "NDJSON fetched over HTTP",
            f"{files['bytes'] / 1e6:,.0f} MB in {files['seconds']:.1f} s ({files['mb_per_s']:.0f} MB/s)",
            "",
        ),
        (
            "checks: file lines = manifest counts = database",
            "ok" if not files["wrong"] and not mismatched else f"FAILED {files['wrong'][:3]} {mismatched}",
            "",
        ),
        ("peak RSS (VmHWM) per worker before the export", _mem({p: before[p] for p in worker_pids if p in before}), ""),
        ("peak RSS per worker after the export", _mem({p: after[p] for p in worker_pids if p in after}), ""),
        (
            "the exporting worker's peak RSS growth",
            f"{after[exporter]['hwm_mb'] - before[exporter]['hwm_mb']:+.0f} MB "
            f"({before[exporter]['hwm_mb']:.0f} → {after[exporter]['hwm_mb']:.0f})",
            "flat",
        ),
        ("peak RSS per worker at the end of the run", _mem({p: final[p] for p in worker_pids if p in final}), ""),
    ]
    if phases:
        without, during = phases["without"], phases["during"]
        for kind, label in (("submissions", "scored submissions/s"), ("reads", "reads by id/s")):
            w, d = without[kind], during[kind]
            rows.append(
                (
                    f"{label}: without / during an export",
                    f"{w['rate']:,.0f} / {d['rate']:,.0f} ({_change(d['rate'], w['rate'])})",
                    "fall ≤ 30 %",
                )
            )
            rows.append(
                (
                    f"  {kind} p50 / p99 without → during",
                    f"{w['p50_ms']:.1f} / {w['p99_ms']:.1f} → {d['p50_ms']:.1f} / {d['p99_ms']:.1f} ms",
                    "",
                )
            )
        rates = [e["rate"] for e in during["exports"] if e["finished"]]
        rows.append(
            (
                "exports finished during the load; their rate",
                f"{len(rates)}; " + (", ".join(f"{r:,.0f}/s" for r in rates) or "none finished"),
                "",
            )
        )
        unfinished = [e for e in during["exports"] if not e["finished"]]
        if unfinished:
            last = unfinished[-1]
            rows.append(("  cancelled at the window's end, after", f"{last['seconds']:.1f} s: {last['progress']}", ""))
        rows.append(("share of the window with an export running", f"{100 * during['export_share']:.0f} %", "100 %"))
        for name, phase in phases.items():
            machine = phase.get("machine") or {}
            rows.append(
                (
                    f"  machine {name}: busy / steal; server + PostgreSQL CPU",
                    f"{100 * machine.get('busy', 0):.0f} / {100 * machine.get('steal', 0):.0f} %; "
                    f"{phase['server_cpu_s']:.1f} + {phase.get('postgres_cpu_s', 0):.1f} s",
                    "",
                )
            )
    errors = warm["submissions"]["errors"] + warm["reads"]["errors"]
    errors += sum(p[k]["errors"] for p in phases.values() for k in ("submissions", "reads"))
    ran_out = any(p["submissions"]["ran_out"] for p in phases.values())
    print()
    scale = f"{args.observations:,} Observations, {args.patients:,} patients"
    print(f"{scale}; {args.workers} workers; authorization off; load windows of {args.duration:.0f} s")
    print(table(["measure", "result", "target"], rows))
    print(f"non-2xx answers: {errors}" + ("; the submissions ran out before a window ended" if ran_out else ""))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    alone.pop("manifest")
    document = {
        "args": vars(args),
        "load": loaded,
        "export_alone": alone,
        "files": files,
        "mismatched": mismatched,
        "memory": {"before": before, "after": after, "end": final, "exporter": exporter, "parent": server.pid},
        "phases": phases,
        "errors": errors,
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"results: {path.relative_to(ROOT)}")
    if errors or files["wrong"] or mismatched:
        sys.exit(1)


if __name__ == "__main__":
    main()

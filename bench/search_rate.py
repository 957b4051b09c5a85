"""bench/search.py's throughput phase: searches (a) and (b) beside a read by id, at 16 connections, in one run.

For each of read-by-id (``Patient/{id}``), (a) and (b): a closed loop (bench/loadgen.py ``--closed``, every
connection sends its next request as soon as the last one answered) over paths to random patients gives the
throughput ceiling; then an open loop at half that rate for ``duration`` seconds gives p50/p99 without
coordinated omission.  Every response's status is counted (any non-2xx is an error); their content was checked by
the sequential phase of the same run.

With ``baseline`` (another checkout), its server searches the same database alternately, round by round.  A
checkout whose migrations stop before the database's head cannot start on it, so the database's recorded revision
is set to that checkout's head while its server runs and restored afterwards (the newer migrations only add
tables these searches do not read).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from urllib.parse import urlencode

import psycopg

from bench.common import start_server, table
from bench.search_queries import Truth, query_a, query_b

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "loadgen.py"


def paths_for(truth: Truth, count: int, seed: str) -> dict[str, list[str]]:
    rng = random.Random(seed)
    out: dict[str, list[str]] = {"read": [], "a": [], "b": []}
    for _ in range(count):
        out["read"].append(f"/fhir/Patient/{truth.plan(rng.randrange(truth.patients)).id}")
        for key, build in (("a", query_a), ("b", query_b)):
            rtype, params, _ = build(truth, rng)
            out[key].append(f"/fhir/{rtype}?{urlencode(params)}")
    return out


def _loadgen(port: int, paths: list[str], *mode: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
        handle.write("\n".join(paths))
        handle.flush()
        done = subprocess.run(
            [sys.executable, str(LOADGEN), "--port", str(port), "--paths-file", handle.name, *mode],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout)


def measure(port: int, paths: dict[str, list[str]], connections: int, duration: int) -> dict[str, dict]:
    """Closed-loop rate, then open-loop latency at half of it, for each of read, (a) and (b)."""
    out = {}
    for key, listed in paths.items():
        _loadgen(port, listed[: connections * 10], "--closed", str(connections))  # warm-up of this statement
        closed = _loadgen(port, listed, "--closed", str(connections))
        half = closed["achieved_rate"] / 2
        opened = _loadgen(port, listed, "--rate", f"{half:.1f}", "--duration", str(duration), "--connections", "64")
        out[key] = {"closed": closed, "open": opened}
    return out


@contextmanager
def schema_of(url: str, code: Path) -> Iterator[None]:
    """The database's recorded migration set to ``code``'s head while it runs (see the module's docstring)."""
    if code == ROOT:
        yield
        return
    versions = sorted(p.name.split("_")[0] for p in (code / "fhir_server/store/migrations/versions").glob("0*.py"))
    with psycopg.connect(url, autocommit=True) as conn:
        current = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        conn.execute("UPDATE alembic_version SET version_num = %s", (versions[-1],))
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (current,))


def rounds(
    url: str, truth: Truth, *, workers: int, connections: int, duration: int, count: int, rounds_: int,
    baseline: Path | None,
) -> dict[str, list[dict]]:  # fmt: skip
    codes = {"current": ROOT, **({"baseline": baseline} if baseline else {})}
    paths = paths_for(truth, count, "rate")
    out: dict[str, list[dict]] = {name: [] for name in codes}
    for number in range(rounds_):
        for name in list(codes) if number % 2 == 0 else list(reversed(codes)):
            print(f"round {number + 1}: {name} code at {connections} connections ...", flush=True)
            with schema_of(url, codes[name]), start_server(url, workers, code=codes[name]) as server:
                out[name].append(measure(server.port, paths, connections, duration))
    return out


def errors(out: dict[str, list[dict]]) -> int:
    return sum(m[k][phase]["errors"] for runs in out.values() for m in runs for k in m for phase in ("closed", "open"))


def summary_table(out: dict[str, list[dict]]) -> str:
    """Medians over the rounds: each search's rate beside the read's, and its latency at half its rate."""
    rows = []
    for name, runs in out.items():
        read = median([m["read"]["closed"]["achieved_rate"] for m in runs])
        for key, what in (("read", "read by id"), ("a", "(a) Observation subject+code, -date"), ("b", "(b) Flag")):
            rate = median([m[key]["closed"]["achieved_rate"] for m in runs])
            p50 = median([m[key]["open"]["p50_ms"] for m in runs])
            p99 = median([m[key]["open"]["p99_ms"] for m in runs])
            ratio = "" if key == "read" else f"{rate / read:.2f} of read"
            target = "" if key == "read" else "≥ 0.5 of read, p99 ≤ 25 ms"
            rows.append((f"{name}: {what}", f"{rate:,.0f}/s", ratio, f"{p50:.1f} / {p99:.1f}", target))
    return table(["code: request", "rate", "fraction", "p50 / p99 ms at half rate", "target"], rows)

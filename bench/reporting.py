"""Reporting benchmark: supervisors' indicators (``Measure/$evaluate-measure``) over a year of a large practice.

Scenario (issue 20, see bench/README.md): the search benchmark's scale extended with programs and clinicians —
500,000 Observations, 5,000 clients, 40 clinicians, 6 programs, 2 years — loaded straight into a fresh PostgreSQL
database by bench/search_load.py's loader (the rows the server itself would write, the reporting index among
them), the data scored by the server's own scoring pipeline (bench/reporting_data.py).  Then ``fhir-server
serve`` with 2 workers and, over HTTP, every indicator for the data's second year, stratified by program,
clinician, month and age band: for the whole practice, one program (``subject=Organization/<program>``) and the
organisation (``subject=Organization/<organisation>``), p50/p95/max over ``--runs`` runs after a warm-up.  Every
report is checked against what the generated data says (SRS ratings below the cutoff: overall, per program, per
month of one program; the SRS mean; early dropouts); a mismatch fails the run.  Then EXPLAIN (ANALYZE, BUFFERS)
of each statement the server's evaluation sends.  Targets: p95 ≤ 2 s; the supervision page's first render ≤ 2.5 s
(measured when the server has the page).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402
from bench.reporting_data import (  # noqa: E402
    CLINIC,
    CLINICIANS,
    ORGANISATION,
    ORGANISATION_NAME,
    PROGRAMS,
    batch_rows,
    client_counts,
    months,
    program_id,
    second_year,
    structure,
)
from bench.search_load import Source, load  # noqa: E402

REPORTING = Source(client_counts, batch_rows, structure)
TARGET_MS, PAGE_TARGET_MS = 2000.0, 2500.0
READ = ["idx_report", "idx_date", "idx_reference", "resources"]  # what an evaluation reads (prewarmed)
CHECKED_PROGRAM = program_id(0)


class CheckFailed(Exception):
    pass


# -- what the generated data says ---------------------------------------------------------------------------------
class Truth:
    """Collected from the loading processes' facts (bench/reporting_data.py ``_facts``), for one period."""

    def __init__(self, start: datetime, end: datetime, dropout_days: int) -> None:
        self.start, self.end, self.judged_by = start, end, end - timedelta(days=dropout_days)
        self.srs: dict[str, dict[str, list[float]]] = {}  # program → month → [ratings, below, sum]
        self.dropout: dict[str, list[int]] = {}  # program → [denominator, exclusions, numerator]

    def add(self, facts: list[dict[str, Any]]) -> None:
        for client in facts:
            program = client["program"]
            for month, (n, below, total) in client["srs"].items():
                cell = self.srs.setdefault(program, {}).setdefault(month, [0, 0, 0.0])
                cell[0], cell[1], cell[2] = cell[0] + n, cell[1] + below, cell[2] + total
            if client["first"] is None:
                continue
            first, last = _instant(client["first"]), _instant(client["last"])
            if not (self.start <= first < self.end):
                continue
            too_recent = first >= self.judged_by
            dropped = client["sessions"] <= 2 and last < self.judged_by and not too_recent
            cell = self.dropout.setdefault(program, [0, 0, 0])
            cell[0], cell[1], cell[2] = cell[0] + 1, cell[1] + too_recent, cell[2] + dropped

    def srs_cell(self, program: str | None = None, month: str | None = None) -> tuple[int, int, float]:
        """SRS ratings in the period, below the cutoff, and their sum: for a program and/or a month."""
        wanted = set(months(self.start.date(), (self.end - timedelta(microseconds=1)).date()))
        n = below = 0
        total = 0.0
        for prog, by_month in self.srs.items():
            for m, (count, low, summed) in by_month.items():
                if m in wanted and program in (None, prog) and month in (None, m):
                    n, below, total = n + int(count), below + int(low), total + summed
        return n, below, total

    def dropouts(self, program: str | None = None) -> tuple[int, int, int]:
        cells = [c for p, c in self.dropout.items() if program in (None, p)]
        return tuple(sum(c[i] for c in cells) for i in range(3))  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        return {"srs": self.srs, "dropout": self.dropout}

    @classmethod
    def from_json(cls, data: dict[str, Any], start: datetime, end: datetime, dropout_days: int) -> Truth:
        truth = cls(start, end, dropout_days)
        truth.srs, truth.dropout = data["srs"], data["dropout"]
        return truth


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


# -- checking a report --------------------------------------------------------------------------------------------
def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _counts(part: dict[str, Any]) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in part["population"]}


def _strata(group: dict[str, Any], stratifier: str) -> dict[str, dict[str, Any]]:
    found = next(s for s in group.get("stratifier", []) if s["code"][0]["coding"][0]["code"] == stratifier)
    return {s["value"]["text"]: s for s in found["stratum"]}


def _reports(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each indicator's report by its Measure id (the canonical's last segment)."""
    found = {}
    for entry in bundle.get("entry", []):
        report = entry["resource"]
        found[report["measure"].split("|")[0].rsplit("/", 1)[1]] = report
    return found


def check(case: str, bundle: dict[str, Any], truth: Truth, indicators: int) -> None:
    """The report of one case against the generated data; raises CheckFailed."""
    _expect(bundle.get("resourceType") == "Bundle", f"not a Bundle: {str(bundle)[:200]}")
    reports = _reports(bundle)
    _expect(len(reports) == indicators, f"{len(reports)} reports, expected {indicators}")
    program = CHECKED_PROGRAM if case == "program" else None
    below = reports["srs-below-cutoff"]["group"][0]
    n, low, total = truth.srs_cell(f"Organization/{program}" if program else None)
    got = _counts(below)
    _expect(
        (got["denominator"], got["numerator"]) == (n, low),
        f"srs-below-cutoff: denominator/numerator {got['denominator']}/{got['numerator']}, data {n}/{low}",
    )
    mean = reports["srs-mean"]["group"][0]
    observed = _counts(mean)["measure-observation"]
    _expect(observed == n, f"srs-mean: {observed} ratings, data {n}")
    expected_mean = round(total / n, 2) if n else None
    got_mean = mean.get("measureScore", {}).get("value")
    _expect(
        got_mean is not None and expected_mean is not None and abs(got_mean - expected_mean) <= 0.0051,
        f"srs-mean: {got_mean}, data {expected_mean}",
    )
    dropout = _counts(reports["early-dropout"]["group"][0])
    expected = truth.dropouts(f"Organization/{program}" if program else None)
    got_dropout = (dropout["denominator"], dropout["denominator-exclusion"], dropout["numerator"])
    _expect(got_dropout == expected, f"early-dropout: denominator/exclusions/numerator {got_dropout}, data {expected}")
    if case == "all":  # each program's stratum
        strata = _strata(below, "program")
        for p in range(PROGRAMS):
            reference = f"Organization/{program_id(p)}"
            n, low, _ = truth.srs_cell(reference)
            cell = _counts(strata[reference]) if reference in strata else {"denominator": 0, "numerator": 0}
            _expect(
                (cell["denominator"], cell["numerator"]) == (n, low),
                f"srs-below-cutoff, stratum {reference}: {cell['denominator']}/{cell['numerator']}, data {n}/{low}",
            )
    if case == "program":  # the program's months
        for month, stratum in _strata(below, "month").items():
            n, low, _ = truth.srs_cell(f"Organization/{program}", month)
            cell = _counts(stratum)
            _expect(
                (cell["denominator"], cell["numerator"]) == (n, low),
                f"srs-below-cutoff, {program} {month}: {cell['denominator']}/{cell['numerator']}, data {n}/{low}",
            )


# -- measuring --------------------------------------------------------------------------------------------------
def period_params() -> dict[str, str]:
    start, end = second_year()
    last = end - timedelta(days=1)
    return {"periodStart": start.strftime("%Y-%m"), "periodEnd": last.strftime("%Y-%m")}


CASES = [  # key, what, extra parameters
    ("all", "every indicator, the whole practice", {}),
    ("program", f"subject=Organization/{CHECKED_PROGRAM}", {"subject": f"Organization/{CHECKED_PROGRAM}"}),
    ("organisation", f"subject=Organization/{ORGANISATION}", {"subject": f"Organization/{ORGANISATION}"}),
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "runs": len(latencies),
        "p50_ms": round(_pct(latencies, 0.5), 1),
        "p95_ms": round(_pct(latencies, 0.95), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "latencies_ms": [round(x, 1) for x in latencies],
    }


def evaluate_runs(
    client: httpx.Client, params: dict[str, str], runs: int, case: str | None, truth: Truth | None, indicators: int
) -> tuple[list[float], list[str], int]:
    """``runs`` sequential requests; latencies (ms), check failures, bytes of the last answer."""
    latencies, failures, size = [], [], 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get("/fhir/Measure/$evaluate-measure", params=params)
        latencies.append((time.perf_counter() - started) * 1000)
        size = len(answer.content)
        try:
            _expect(answer.status_code == 200, f"HTTP {answer.status_code}: {answer.text[:300]}")
            if case is not None and truth is not None:
                check(case, answer.json(), truth, indicators)
        except (CheckFailed, KeyError, StopIteration, TypeError) as exc:
            failures.append(f"{params}: {exc!r}"[:500])
    return latencies, failures, size


SUPERVISOR = "Practitioner/bench-supervisor"


def supervisor_cookie(url: str, root: str) -> dict[str, str]:
    """An app session as a supervision launch from this server leaves it: a user of this server who supervises
    the organisation, and an access token of this server's for them (``user/MeasureReport.rs``, signed with the
    server's own key, which the benchmark shares through FHIR_SERVER_SECRET_KEY).  The launch itself (sign-in,
    authorization) is not what is measured."""
    import secrets

    from fhir_server.auth import urls
    from fhir_server.auth.admin import add_user
    from fhir_server.auth.issuance import access_token_claims
    from fhir_server.auth.keys import KeyStore
    from fhir_server.config import Settings
    from fhir_server.smart.sessions import COOKIE_NAME, AppSessionStore
    from fhir_server.store.engine import build_engine

    settings = Settings(database_url=url, _env_file=None)
    engine = build_engine(settings)
    try:
        user = add_user(
            engine,
            f"bench-supervisor-{uuid.uuid4().hex[:8]}",
            secrets.token_urlsafe(24),
            SUPERVISOR,
            may_pick_patient=False,
            supervises=[f"Organization/{ORGANISATION}"],
        )
        base = f"{root}/"
        scope = "openid fhirUser user/MeasureReport.rs"
        claims = access_token_claims(
            issuer=urls.issuer(settings, base),
            audience=urls.fhir_base(settings, base),
            client_id="bench-reporting",
            subject=user,
            scope=scope,
            lifetime=3600,
            fhir_user=SUPERVISOR,
        )
        token = KeyStore(engine).sign(claims)
        session_id, _ = AppSessionStore(engine, 3600).create_session(
            access_token=token, scope=scope, fhir_user=SUPERVISOR, app_view="supervision"
        )
    finally:
        engine.dispose()
    return {COOKIE_NAME: session_id}


def supervision_page(url: str, root: str, runs: int, warmup: int) -> dict[str, Any]:
    """The supervision page's first render for the organisation's supervisor over the period (every indicator,
    the organisation's scope): its HTML, then the stylesheets and scripts it names, each run from a new client (no
    connection or cache kept).  Not measured while the server has no such page."""
    with httpx.Client(base_url=root, timeout=300) as probe:
        if probe.get("/app/supervision").status_code == 404:
            return {"measured": False, "reason": "the server has no /app/supervision page (404)"}
    cookies = supervisor_cookie(url, root)
    period = period_params()
    query = {"from": period["periodStart"], "to": period["periodEnd"], "scope": f"Organization/{ORGANISATION}"}
    html_ms, total_ms, failures, assets = [], [], [], []
    for run in range(warmup + runs):
        with httpx.Client(base_url=root, timeout=300, cookies=cookies) as client:
            started = time.perf_counter()
            page = client.get("/app/supervision", params=query)
            html = (time.perf_counter() - started) * 1000
            assets = sorted(set(re.findall(r'(?:href|src)="(/[^"?#]+\.(?:css|js)(?:\?[^"]*)?)"', page.text)))
            for asset in assets:
                if client.get(asset).status_code != 200:
                    failures.append(f"{asset}: not 200")
            total = (time.perf_counter() - started) * 1000
        if page.status_code != 200 or ORGANISATION_NAME not in page.text:  # the report, not a refusal page
            failures.append(f"/app/supervision: HTTP {page.status_code}: {page.text[:300]}")
        if run >= warmup:
            html_ms.append(html)
            total_ms.append(total)
    return {
        "measured": True,
        "assets": assets,
        "html": summary(html_ms),
        **summary(total_ms),
        "bytes": len(page.content),
        "failures": failures[:5],
    }


def prewarm(url: str) -> float:
    """Read the relations an evaluation reads once, so the OS cache holds them (as search.py does)."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        relations = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relname = ANY(%(t)s) UNION ALL "
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "WHERE c.relname = ANY(%(t)s)",
            {"t": READ},
        ).fetchall()
        for (relation,) in relations:
            conn.execute("SELECT pg_prewarm(%s, 'read')", (relation,))
    return time.perf_counter() - started


def explain(url: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement the server's own evaluation sends for every indicator over the
    period, the whole practice, on the server's own read engine (store/engine.py) and in the report's own
    connection (store/report_counts.py ``report_connection``: its transaction and settings).  The evaluation runs
    once, recording its statements; they are then replayed in order under EXPLAIN, each labelled with the groups it
    counts, with what is in effect when it runs (SHOW).  Works with the evaluation of one indicator at a time (the
    code before 2026-12-06's eighth session, for A/B runs) and with one evaluation of all indicators."""
    import inspect

    from sqlalchemy import event

    from fhir_server.config import Settings
    from fhir_server.library.discover import discover
    from fhir_server.reporting.evaluate import evaluate, make_request
    from fhir_server.reporting.scope import Scope, Window
    from fhir_server.store.engine import build_engine, build_read_engine

    try:
        from fhir_server.store.report_connections import report_connection
    except ImportError:  # the code before 2026-12-06's eighth session
        from fhir_server.store.report_counts import report_connection

    settings = Settings(database_url=url, _env_file=None)
    library = discover(settings.library_paths(), settings.content_pack_paths())
    start, end = second_year()
    params = period_params()
    window = Window(start, end, settings.dropout_days)
    request = make_request(library, window, (params["periodStart"], params["periodEnd"]), Scope(), None, "summary")
    indicators = list(library.indicators)
    parameters = inspect.signature(evaluate).parameters
    together, listed = "indicators" in parameters, "connections" in parameters
    if together:  # one statement per population, in the evaluation's order (reporting/evaluate.py)
        from fhir_server.store.report_units import population

        families: dict[Any, list[str]] = {}
        for indicator in indicators:
            for group in indicator.definition.groups:
                key = population(group.count, request.repeated)
                families.setdefault(key, []).append(f"{indicator.id}/{group.code}")
        runs = [(indicators, list(families.values()))]
    else:
        runs = [([i], [[f"{i.id}/{g.code}"] for g in i.definition.groups]) for i in indicators]
    write_engine = build_engine(settings)
    engine = build_read_engine(settings, write_engine)
    captured: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *a: captured.append((a[2], a[3])))
    statements: list[dict[str, Any]] = []
    in_effect: dict[str, str] = {}
    settings_made: set[str] = set()
    for evaluated, labels in runs:
        with report_connection(engine) as conn:
            captured.clear()
            started = time.perf_counter()
            if together:
                evaluate([conn] if listed else conn, evaluated, request)  # one connection: statements in order
            else:
                evaluate(conn, evaluated[0], request)
            wall = (time.perf_counter() - started) * 1000
            replay, index = list(captured), 0
            for statement, parameters in replay:
                if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                    settings_made.add(statement)  # made again by report_connection around this replay
                    continue
                for name in ("jit", "work_mem"):
                    in_effect[name] = conn.exec_driver_sql(f"SHOW {name}").scalar()
                lines = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).scalars().all()
                text = "\n".join(lines)
                times = {k: float(v) for k, v in re.findall(r"(Planning|Execution) Time: ([\d.]+) ms", text)}
                jit = re.search(r"Timing: Generation [\d.]+ ms, Inlining [\d.]+ ms, .* Total ([\d.]+) ms", text)
                buffers = re.search(r"Buffers: (.*)", text)
                counted = labels[index] if index < len(labels) else ["(subject list)"]
                statements.append(
                    {
                        "indicator": counted[0].partition("/")[0] if len(counted) == 1 else "",
                        "group": ", ".join(counted),
                        "evaluate_ms": round(wall, 1) if index == 0 else None,
                        "planning_ms": times.get("Planning"),
                        "execution_ms": times.get("Execution"),
                        "jit_ms": float(jit.group(1)) if jit else None,
                        "buffers": buffers.group(1) if buffers else "",
                        "sql": statement,
                        "parameters": {k: str(v) for k, v in (parameters or {}).items()},
                        "plan": lines,
                    }
                )
                index += 1
    engine.dispose()
    write_engine.dispose()
    return {"statements": statements, "settings_made": sorted(settings_made), "in_effect": in_effect}


# -- the database ---------------------------------------------------------------------------------------------
@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if args.database:
        yield args.database
    elif args.keep:
        name = f"fhir_bench_reporting_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.postgres.rpartition('/')[0]}/{name}"
        try:
            yield url
        finally:
            # its stored secrets are encrypted with this run's key (bench/common.py): a reuse needs the same one
            key = os.environ["FHIR_SERVER_SECRET_KEY"]
            print(f'database kept: {url}  (drop: DROP DATABASE "{name}"); measure it again without loading:')
            print(f"  FHIR_SERVER_SECRET_KEY={key} .venv/bin/python bench/reporting.py --database {url}")
    else:
        with fresh_postgres(args.postgres, "fhir_bench_reporting") as url:
            yield url


def remember(url: str, meta: dict[str, Any]) -> None:
    """The scale and the truth, on the database (so --database can check its answers without loading)."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = url.rpartition("/")[2]
        statement = sql.SQL("COMMENT ON DATABASE {} IS {}")
        conn.execute(statement.format(sql.Identifier(name), sql.Literal(json.dumps(meta))))


def recalled(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
    meta = json.loads(comment) if comment else {}
    if "truth" not in meta:
        raise SystemExit(f"{url} was not loaded by bench/reporting.py --keep")
    return meta


def code_state() -> dict[str, Any]:
    """The commit measured, and the server's files changed since (a working tree others may be editing)."""
    import subprocess

    def git(*args: str) -> str:
        found = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return found.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "fhir_server").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "server_files_changed": changed}


def database_rows(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        by_param = dict(conn.execute("SELECT param, count(*) FROM idx_report GROUP BY 1").fetchall())
        sizes = conn.execute(
            "SELECT pg_total_relation_size('idx_report'), pg_relation_size('idx_report'), "
            "pg_database_size(current_database())"
        ).fetchone()
    return {
        "idx_report_rows": by_param,
        "idx_report_mb_with_indexes": round(sizes[0] / 1e6),
        "idx_report_table_mb": round(sizes[1] / 1e6),
        "database_gb": round(sizes[2] / 1e9, 2),
    }


# -- main -----------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", help="admin database URL")
    parser.add_argument("--observations", type=int, default=500_000)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=20, help="clients per COPY transaction")
    parser.add_argument("--runs", type=int, default=20, help="measured requests per case")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up requests per case")
    parser.add_argument("--per-indicator", type=int, default=3, help="requests per indicator alone (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database (prints its URL)")
    parser.add_argument("--database", help="measure a database loaded earlier with --keep instead of loading")
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN plan, not only a missed target's")
    args = parser.parse_args()

    from fhir_server.config import Settings

    dropout_days = Settings().dropout_days
    start, end = second_year()
    params = period_params()
    loaded = None
    with database(args) as url:
        if args.database:
            meta = recalled(url)
            truth = Truth.from_json(meta["truth"], start, end, dropout_days)
        else:
            truth = Truth(start, end, dropout_days)
            loaded = load(url, args.seed, args.observations, args.clients, args.batch, REPORTING, truth.add)
            meta = {"seed": args.seed, "observations": args.observations, "clients": args.clients}
            remember(url, {**meta, "truth": truth.to_json()})
            print(table(["load", "value"], [(k, v) for k, v in loaded.items()]))
        scale = {k: meta[k] for k in ("seed", "observations", "clients")}
        rows = database_rows(url)
        print(table(["reporting index", "value"], [(k, v) for k, v in rows.items()]))
        print(f"prewarmed the reporting relations in {prewarm(url):.1f} s", flush=True)
        machine: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "code": code_state()}
        results: dict[str, Any] = {}
        with start_server(url, args.workers) as server, httpx.Client(base_url=server.root, timeout=300) as client:
            indicators = len(_reports(client.get("/fhir/Measure/$evaluate-measure", params=params).json()))
            for done, (key, _, extra) in enumerate(CASES):
                progress("evaluating", done, len(CASES))
                evaluate_runs(client, {**params, **extra}, args.warmup, None, None, indicators)
                latencies, failures, size = evaluate_runs(
                    client, {**params, **extra}, args.runs, key, truth, indicators
                )
                results[key] = {**summary(latencies), "failures": failures, "bytes": size}
            progress("evaluating", len(CASES), len(CASES))
            alone = {}
            if args.per_indicator:
                bundle = client.get("/fhir/Measure/$evaluate-measure", params=params).json()
                for measure in sorted(_reports(bundle)):
                    latencies, failures, _ = evaluate_runs(
                        client, {**params, "measure": measure}, args.per_indicator, None, None, 1
                    )
                    alone[measure] = {**summary(latencies), "failures": failures}
            page = supervision_page(url, server.root, args.runs, args.warmup)
            machine["loadavg_after"] = os.getloadavg()
        plans = explain(url)

    failed = any(r["failures"] for r in [*results.values(), *alone.values(), page] if "failures" in r)
    print(
        f"\n{scale['observations']:,} Observations, {scale['clients']:,} clients, {CLINICIANS} clinicians, "
        f"{PROGRAMS} programs ({CLINIC} in {ORGANISATION}); period {params['periodStart']}..{params['periodEnd']}; "
        f"{indicators} indicators; {args.runs} runs per case after {args.warmup} warm-up"
    )
    before, after = (" ".join(f"{x:.1f}" for x in machine[k]) for k in ("loadavg_before", "loadavg_after"))
    print(f"load average before / after: {before} / {after} on {machine['cpus']} CPUs (incl. this benchmark)")
    code = machine["code"]
    changed = len(code["server_files_changed"])
    print(f"code: {code['commit']}" + (f", {changed} server files changed since" if changed else ""))
    table_rows = []
    for key, what, _ in CASES:
        r = results[key]
        missed = r["p95_ms"] > TARGET_MS
        table_rows.append(
            (
                f"({key}) {what}",
                f"{r['p50_ms']:.0f}",
                f"{r['p95_ms']:.0f}",
                f"{r['max_ms']:.0f}",
                f"{r['bytes'] / 1e3:.0f} kB",
                f"p95 ≤ {TARGET_MS:.0f} ms{' MISSED' if missed else ''}",
                "ok" if not r["failures"] else f"{len(r['failures'])} FAILED",
            )
        )
    if page["measured"]:
        missed = page["p95_ms"] > PAGE_TARGET_MS
        table_rows.append(
            (
                f"supervision page, first render (HTML + {len(page['assets'])} assets; HTML alone p50 "
                f"{page['html']['p50_ms']:.0f} ms)",
                f"{page['p50_ms']:.0f}",
                f"{page['p95_ms']:.0f}",
                f"{page['max_ms']:.0f}",
                f"{page['bytes'] / 1e3:.0f} kB",
                f"p95 ≤ {PAGE_TARGET_MS:.0f} ms{' MISSED' if missed else ''}",
                "ok" if not page["failures"] else f"{len(page['failures'])} FAILED",
            )
        )
    print(table(["$evaluate-measure", "p50 ms", "p95 ms", "max ms", "answer", "target", "checks"], table_rows))
    if not page["measured"]:
        print(f"supervision page: not measured: {page['reason']}")
    if alone:
        print(f"\neach indicator alone (measure=<id>, no subject), {args.per_indicator} runs")
        print(
            table(
                ["indicator", "p50 ms", "max ms"],
                [(m, f"{r['p50_ms']:.0f}", f"{r['max_ms']:.0f}") for m, r in alone.items()],
            )
        )
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the server's statements, the whole practice, one evaluation")
    made = "; ".join(plans["settings_made"]) or "none"
    shown = ", ".join(f"{k} = {v}" for k, v in plans["in_effect"].items())
    print(f"settings the evaluation makes: {made}; in effect when its statements run: {shown}")
    print(
        table(
            ["indicator", "group", "evaluate ms", "planning ms", "execution ms", "of it JIT ms", "buffers"],
            [
                (
                    s["indicator"],
                    s["group"],
                    s["evaluate_ms"] if s["evaluate_ms"] is not None else "",
                    s["planning_ms"],
                    s["execution_ms"],
                    s["jit_ms"] if s["jit_ms"] is not None else "",
                    s["buffers"],
                )
                for s in plans["statements"]
            ],
        )
    )
    missed_any = any(results[k]["p95_ms"] > TARGET_MS for k, _, _ in CASES)
    if args.plans or missed_any:
        for s in sorted(plans["statements"], key=lambda s: -(s["execution_ms"] or 0))[: None if args.plans else 3]:
            print(f"\n{s['indicator']} / {s['group']}: {s['execution_ms']} ms\n{s['sql']}\n{s['parameters']}")
            print("\n".join(s["plan"]))
    for key, r in [*results.items(), *alone.items(), ("supervision page", page)]:
        for failure in r.get("failures", [])[:3]:
            print(f"FAILED ({key}): {failure}")

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"reporting-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "scale": scale,
        "period": params,
        "load": loaded,
        "database": rows,
        "machine": machine,
        "cases": results,
        "indicators_alone": alone,
        "supervision_page": page,
        "explain": plans,
        "args": vars(args),
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""What one read's AuditEvent costs to store, as the server stores it and as a one-row audit store would.

Scenario: a fresh PostgreSQL database at the current schema; ``--events`` read AuditEvents of a Backend Services
client, built as the server builds them (auth/audit.build_event: one Patient read each, over 1,000 patients).

1. **As now:** queued on the server's own ``AuditWriter`` and flushed, so each is stored as a resource (a current
   row and a version row with the content, and its index rows), in batches of 200.
2. **One row:** the same events COPYed, 200 per transaction, into an append-only table with one row per event
   (id, recorded, patient, agent, outcome, entity, the content) and the indexes an audit review searches by:
   (patient, recorded), (agent, recorded), (entity, recorded), (recorded), and failures by (outcome, recorded).
   The table exists only in this benchmark's database: it measures the design issue 23 names as the next step.

Reported per event: PostgreSQL's CPU (all its processes: run on a quiet machine), this process's CPU and wall time.

    .venv/bin/python bench/audit_rows.py --events 20000
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_postgres, postgres_cpu, progress, table
from fhir_server.auth.audit import Access, AuditWriter, build_event
from fhir_server.auth.caller import Caller
from fhir_server.config import Settings
from fhir_server.engine.composition import build_core
from fhir_server.store.migrate import upgrade

BATCH = 200
CALLER = Caller.from_claims(
    {"iss": "http://bench/auth", "sub": "bench-reader", "client_id": "bench-reader", "scope": "system/*.rs",
     "jti": "bench", "exp": 2_000_000_000}
)  # fmt: skip
ONE_ROW_TABLE = """CREATE TABLE bench_audit_rows (id text PRIMARY KEY, recorded timestamptz NOT NULL, patient text,
    agent text, outcome text NOT NULL, entity text, content bytea NOT NULL)"""
ONE_ROW_INDEXES = [
    "CREATE INDEX ON bench_audit_rows (patient, recorded)",
    "CREATE INDEX ON bench_audit_rows (agent, recorded)",
    "CREATE INDEX ON bench_audit_rows (entity, recorded)",
    "CREATE INDEX ON bench_audit_rows (recorded)",
    "CREATE INDEX ON bench_audit_rows (outcome, recorded) WHERE outcome <> '0'",
]


def read_events(count: int) -> list[dict[str, Any]]:
    return [
        build_event(CALLER, Access("read", resources=[f"Patient/p{i % 1000}"], patients=[f"p{i % 1000}"]))
        for i in range(count)
    ]


def measured(work: Callable[[], None], count: int) -> dict[str, float]:
    before_pg, before_cpu, before_wall = postgres_cpu(), time.process_time(), time.perf_counter()
    work()
    after_pg, after_cpu, after_wall = postgres_cpu(), time.process_time(), time.perf_counter()
    return {
        "postgres_us": (after_pg - before_pg) / count * 1e6 if before_pg is not None else float("nan"),
        "python_us": (after_cpu - before_cpu) / count * 1e6,
        "wall_us": (after_wall - before_wall) / count * 1e6,
    }


def as_resources(url: str, events: list[dict[str, Any]]) -> dict[str, float]:
    core = build_core(Settings(database_url=url, load_library=False, _env_file=None))
    writer = AuditWriter(core.repository)

    def store() -> None:
        for start in range(0, len(events), BATCH * 10):
            for event in events[start : start + BATCH * 10]:
                writer._put((time.monotonic(), event))
            writer.flush()
            progress("as resources", start + BATCH * 10, len(events))

    try:
        return measured(store, len(events))
    finally:
        core.engine.dispose()


def as_one_row(url: str, events: list[dict[str, Any]]) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ONE_ROW_TABLE)
        for statement in ONE_ROW_INDEXES:
            conn.execute(statement)

        def store() -> None:
            for start in range(0, len(events), BATCH):
                with conn.transaction(), conn.cursor().copy("COPY bench_audit_rows FROM STDIN") as copy:
                    for event in events[start : start + BATCH]:
                        entity = event["entity"][-1]["what"]["reference"]
                        patient = event["entity"][0]["what"]["reference"]
                        agent = event["agent"][0]["who"]["identifier"]["value"]
                        row = (uuid.uuid4().hex, event["recorded"], patient, agent, event["outcome"], entity)
                        copy.write_row((*row, orjson.dumps(event)))
                progress("as one row", start + BATCH, len(events))

        return measured(store, len(events))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with fresh_postgres(args.postgres, "bench_audit") as url:
        upgrade(url)
        now = as_resources(url, read_events(args.events))
        one_row = as_one_row(url, read_events(args.events))
    rows = [
        (name, f"{r['postgres_us']:.0f} µs", f"{r['python_us']:.0f} µs", f"{r['wall_us']:.0f} µs")
        for name, r in (("stored as a resource (now)", now), ("one row (design)", one_row))
    ]
    print(f"\n{args.events:,} read AuditEvents, batches of {BATCH}")
    print(table(["per event", "PostgreSQL CPU", "this process's CPU", "wall"], rows))


if __name__ == "__main__":
    main()

"""Clinician view load time (issue 8: "loads in under a second for a client with 100 sessions").

Scenario: a fresh PostgreSQL database; ``fhir-server serve`` as its own process (1 worker); a client with 100
sessions, each an ORS at the start and an SRS at the end (200 scored responses: Observations, Flags,
Provenance), stored through the FHIR API; an app session as an EHR launch leaves it (launch context: that
patient); then the clinician view is fetched over HTTP, sequentially, and the latency of the whole page (summary
query, charts, tables, delivery states) is reported.  Run: ``make bench-clinician`` or
``.venv/bin/python bench/clinician.py [--sessions 100] [--requests 30]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import Engine

from bench.common import fresh_postgres, progress, start_server, table
from bench.shipped import canonical
from fhir_server.config import Settings
from fhir_server.smart.sessions import COOKIE_NAME, AppSessionStore
from fhir_server.store.engine import build_engine

SRS = canonical("srs")
ORS = canonical("ors")


def response(patient: str, canonical: str, day: date, mark: int) -> dict:
    ors = canonical == ORS
    names = (
        ("individually", "interpersonally", "socially", "overall")
        if ors
        else ("relationship", "goals", "approach", "overall")
    )
    items = [{"linkId": n, "answer": [{"valueInteger": mark}]} for n in names]
    if ors:
        code = {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-respondent", "code": "self"}
        items.insert(0, {"linkId": "respondent", "answer": [{"valueCoding": code}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": "urn:bench:session", "value": f"{patient}-{'ors' if ors else 'srs'}-{day}"},
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": f"{day}T{'09' if ors else '10'}:50:00Z",
        "item": items,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FHIR_SERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    with fresh_postgres(args.postgres, "bench_clinician") as url:
        from fhir_server.store.migrate import upgrade

        upgrade(url)
        with start_server(url, 1) as server, httpx.Client(base_url=server.root, timeout=60) as client:
            patient = "bench-client"
            headers = {"Content-Type": "application/fhir+json"}
            client.put(
                f"/fhir/Patient/{patient}",
                json={"resourceType": "Patient", "id": patient, "birthDate": "1980-01-01"},
                headers=headers,
            )
            first = date(2024, 1, 1)
            for n in range(args.sessions):
                day = first + timedelta(days=7 * n)
                for canonical, mark in ((ORS, 40 + n % 40), (SRS, 80 + (n * 7) % 20)):
                    answer = client.post(
                        "/fhir/QuestionnaireResponse", json=response(patient, canonical, day, mark), headers=headers
                    )
                    answer.raise_for_status()
                progress("sessions", n + 1, args.sessions)
            engine = build_engine_for(url)
            sessions = AppSessionStore(engine, 3600)
            session_id, _ = sessions.create_session(
                access_token="bench", patient=patient, fhir_user="Practitioner/bench", app_view="clinician"
            )
            engine.dispose()
            cookies = {COOKIE_NAME: session_id}
            client.get("/app/clinician", cookies=cookies).raise_for_status()  # warm
            timings = []
            for n in range(args.requests):
                started = time.perf_counter()
                page = client.get("/app/clinician", cookies=cookies)
                timings.append((time.perf_counter() - started) * 1000)
                page.raise_for_status()
                progress("page loads", n + 1, args.requests)
            points = page.text.count('class="point"')
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(
        table(
            ["sessions", "chart points", "page loads", "p50 ms", "p95 ms", "max ms", "target"],
            [
                (
                    args.sessions,
                    points,
                    args.requests,
                    f"{statistics.median(timings):.0f}",
                    f"{p95:.0f}",
                    f"{timings[-1]:.0f}",
                    "< 1000 ms",
                )
            ],
        )
    )
    return 0


def build_engine_for(url: str) -> Engine:
    """The store's engine for the bench database (to open the app session a launch would leave)."""

    return build_engine(Settings(database_url=url, _env_file=None))


if __name__ == "__main__":
    sys.exit(main())

"""``$validate`` latency: one WAI-SR QuestionnaireResponse (12 answers, ~1.5 KB of compact JSON: the shipped
example ``questionnaires/wai-sr/examples/valid-mixed-profile.json``) validated again and again.

Scenario (bench/README.md): a fresh database (PostgreSQL when FHIR_SERVER_TEST_POSTGRES_URL or --postgres is set,
else SQLite); the server started as ``fhir-server serve`` with 1 worker; one client sending the requests one after
another over a kept-alive connection (closed loop), after a warm-up.  It reports the end-to-end p50/p95/p99 of the
HTTP round trip and, in this process, the validator's own share (``check`` of the R4 rules and the answers against
the Questionnaire) per call.

    .venv/bin/python bench/validate.py [--requests 3000] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402

EXAMPLE = ROOT / "questionnaires" / "wai-sr" / "examples" / "valid-mixed-profile.json"


def response() -> dict:
    resource = json.loads(EXAMPLE.read_text())["response"]
    resource["subject"] = {"reference": "Patient/bench"}
    return resource


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.50), pick(0.95), pick(0.99)


def over_http(root: str, body: bytes, requests: int) -> list[float]:
    samples = []
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=f"{root}/fhir", timeout=30) as client:
        for _ in range(200):  # warm-up: tables built, caches filled, connection open
            client.post("/QuestionnaireResponse/$validate", content=body, headers=headers)
        for n in range(requests):
            start = time.perf_counter()
            answer = client.post("/QuestionnaireResponse/$validate", content=body, headers=headers)
            samples.append(time.perf_counter() - start)
            if answer.status_code != 200 or '"error"' in answer.text:
                raise SystemExit(f"bench/validate.py: the example did not validate: {answer.text[:300]}")
            if n % 200 == 0:
                progress("$validate", n, requests)
    progress("$validate", requests, requests)
    return samples


def in_process(resource: dict, calls: int) -> list[float]:
    from fhir_server.library import discover
    from fhir_server.scoring.pipeline import ScoringPipeline
    from fhir_server.validation.questionnaire_response import validate_response
    from fhir_server.validation.resource import check

    library = discover([ROOT / "questionnaires", ROOT / "terminology"], [])
    pipeline = ScoringPipeline(library, {})
    url, _, version = resource["questionnaire"].partition("|")
    questionnaire = library.questionnaire(url, version)
    samples = []
    for n in range(calls + 200):
        start = time.perf_counter()
        report = check(resource, "QuestionnaireResponse")
        issues = validate_response(resource, questionnaire, pipeline.rules_for(resource))
        if n >= 200:
            samples.append(time.perf_counter() - start)
        if report.errors or issues:
            raise SystemExit(f"bench/validate.py: the example did not validate: {report.errors or issues}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--postgres", default=os.environ.get("FHIR_SERVER_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    resource = response()
    body = json.dumps(resource, separators=(",", ":")).encode()
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(fresh_postgres(args.postgres, "bench_validate"))
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{folder}/bench.db"
        server = stack.enter_context(start_server(url, workers=1))
        http = percentiles(over_http(server.root, body, args.requests))
    local = percentiles(in_process(resource, args.requests))
    print(f"\nQuestionnaireResponse of {len(body)} bytes ({len(resource['item'])} answers); "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}; {args.requests} requests")  # fmt: skip
    rows = [("$validate over HTTP (ms)", *(f"{v:.2f}" for v in http)),
            ("validator in process (ms)", *(f"{v:.3f}" for v in local))]  # fmt: skip
    print(table(["", "p50", "p95", "p99"], rows))


if __name__ == "__main__":
    main()

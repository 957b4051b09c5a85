"""``$validate`` latency: QuestionnaireResponses validated again and again — a completed ORS of 1,591 bytes as a
client's form sends it, its total included, with its narrative (the shipped example
``questionnaires/ors/examples/valid-self-total-34-1.json`` plus text, author, encounter, identifier and meta), a
WAI-SR of ~2.3 KB (``questionnaires/wai-sr/examples/valid-mixed-profile.json``, 19 answers) — and, as the floor, a
minimal Basic (what the HTTP round trip costs without a validator worth the name).

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

EXAMPLES = ROOT / "questionnaires"
NARRATIVE = (
    '<div xmlns="http://www.w3.org/1999/xhtml"><p>Outcome Rating Scale completed by the client at the start of the '
    "session: individually, interpersonally, socially and overall, each marked on a 10 cm line.</p><p>Entered on the "
    "clinic's tablet and sent by the rating form; scored by the server on arrival, the total compared with the "
    "clinical cutoff and the client's earlier sessions, and written back to the EHR.</p><p>The therapist sees the "
    "score beside the earlier sessions before the conversation begins.</p></div>"
)


def ors() -> dict:
    # completed, with its four lines and the total the form calculated: the score is checked too
    resource = json.loads((EXAMPLES / "ors" / "examples" / "valid-self-total-34-1.json").read_text())["response"]
    resource.update(
        meta={"tag": [{"system": "http://fit-fhir.org/fhir/CodeSystem/fit-engagement", "code": "in-session"}]},
        text={"status": "generated", "div": NARRATIVE},
        identifier={"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5f0c2a1e-8d3b-4c6f-9a7e-2b1d0c9e8f7a"},
        subject={"reference": "Patient/bench", "display": "Bench client"},
        encounter={"reference": "Encounter/bench-session-12", "display": "Session 12, individual therapy"},
        author={"reference": "Patient/bench"},
        source={"reference": "Patient/bench"},
    )
    return resource


def wai_sr() -> dict:
    resource = json.loads((EXAMPLES / "wai-sr" / "examples" / "valid-mixed-profile.json").read_text())["response"]
    resource["subject"] = {"reference": "Patient/bench"}
    return resource


FLOOR = {"resourceType": "Basic", "code": {"text": "bench"}}


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.50), pick(0.95), pick(0.99)


def over_http(root: str, resource: dict, requests: int, label: str) -> list[float]:
    samples = []
    body = json.dumps(resource, separators=(",", ":")).encode()
    url = f"/{resource['resourceType']}/$validate"
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=f"{root}/fhir", timeout=30) as client:
        for _ in range(200):  # warm-up: tables built, caches filled, connection open
            client.post(url, content=body, headers=headers)
        for n in range(requests):
            start = time.perf_counter()
            answer = client.post(url, content=body, headers=headers)
            samples.append(time.perf_counter() - start)
            if answer.status_code != 200 or '"error"' in answer.text:
                raise SystemExit(f"bench/validate.py: {label} did not validate: {answer.text[:300]}")
            if n % 200 == 0:
                progress(label, n, requests)
    progress(label, requests, requests)
    return samples


def in_process(resource: dict, calls: int) -> list[float] | None:
    try:  # the validator's entry point (absent from code older than the R4 validator: then only HTTP is measured)
        from fhir_server.validation.resource import check
    except ImportError:
        return None
    from fhir_server.library import discover
    from fhir_server.scoring.pipeline import ScoringPipeline
    from fhir_server.validation.questionnaire_response import validate_response

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
    cases = [("ORS", ors()), ("WAI-SR", wai_sr()), ("floor: a minimal Basic", FLOOR)]
    rows = []
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(fresh_postgres(args.postgres, "bench_validate"))
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{folder}/bench.db"
        server = stack.enter_context(start_server(url, workers=1))
        for label, resource in cases:
            size = len(json.dumps(resource, separators=(",", ":")))
            http = percentiles(over_http(server.root, resource, args.requests, label))
            rows.append((f"{label}, {size} bytes: $validate over HTTP", *(f"{v:.2f}" for v in http)))
    for label, resource in cases[:2]:
        samples = in_process(resource, args.requests)
        if samples is not None:
            rows.append((f"{label}: the validator in process", *(f"{v:.2f}" for v in percentiles(samples))))
    print(f"\n\n{'PostgreSQL' if args.postgres else 'SQLite'}; {args.requests} requests each, one after another (ms)")
    print(table(["", "p50", "p95", "p99"], rows))


if __name__ == "__main__":
    main()

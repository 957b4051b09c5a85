"""Subscriptions benchmark: notification delivery rate and end-to-end latency (change committed → receiver got it)
while scored submissions arrive at a steady rate.

Scenario (see bench/README.md): a fresh PostgreSQL database; ``fhir-server serve`` with 2 workers, authorization
off (as every benchmark here), the notification worker on and ``FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS=true`` so
it may POST to a receiver on loopback; a rest-hook receiver (an HTTP server in this process's own thread) that
records when each notification arrived; one Subscription on the ``score-written`` topic (``--topic flag``: the
``flag-raised-or-closed`` topic), ``full-resource`` payload (``--content id-only``), no filter, the handshake
waited for; 20 warm-up submissions, delivered and set aside.  Then an open loop (each submission due at
``start + i / rate`` whatever happened before) of completed SRS responses (bench/scoring.py's weekly sessions of
1,000 clients) at ``--rate`` (50) per second for ``--duration`` seconds, and a wait until every event the server
counted (``$status``) arrived or ``--drain`` seconds passed.

Latency of an event = the receiver's arrival time minus the 201 answer of the submission whose transaction wrote it
(the commit was before that answer, so this is if anything short by the answer's trip, ~1 ms), both taken in this
process.  An event is matched to its submission by its focus: a scored Observation's or raised Flag's id starts
with the QuestionnaireResponse's (``<response id>-<part>``); a Flag closed by a later session (an update,
``full-resource`` only) is matched to the last submission of its patient answered before it arrived.  Beside it,
arrival minus the event's own ``timestamp`` (the server's clock when it queued the event), for every event.  Reports
p50/p95/p99/max, notifications and events per second, events counted by the server and never received, scored
submissions without an event (``score-written`` only), events received twice (delivery is at least once).
Target (issue): p99 ≤ 1 s at 50 scored submissions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_postgres, progress, start_server, table  # noqa: E402
from bench.scoring import submissions  # noqa: E402

TOPIC = "http://fit-fhir.org/fhir/SubscriptionTopic"
TOPICS = {"score": f"{TOPIC}/score-written", "flag": f"{TOPIC}/flag-raised-or-closed"}
EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
LOCATION = re.compile(r"QuestionnaireResponse/([^/]+)")


# -- the receiver -------------------------------------------------------------------------------------------------
class Receiver:
    """A rest-hook endpoint on a loopback port: every notification's arrival (monotonic and wall clock) and body."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, float, bytes]] = []
        self.event_numbers: set[int] = set()  # of every event notification so far (for the drain)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived, wall = time.monotonic(), time.time()
                with receiver._lock:
                    receiver.arrivals.append((arrived, wall, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                status = status_of(json.loads(body))
                if status.get("type") == "event-notification":
                    numbers = {int(e["event-number"]) for e in status["notification-event"]}
                    with receiver._lock:
                        receiver.event_numbers |= numbers

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notifications(self) -> list[tuple[float, float, dict]]:
        with self._lock:
            found = list(self.arrivals)
        return [(arrived, wall, json.loads(body)) for arrived, wall, body in found]


def status_of(notification: dict) -> dict[str, Any]:
    """The SubscriptionStatus parameters of a notification Bundle (notification-event: a list of parts)."""
    out: dict[str, Any] = {"notification-event": []}
    for p in notification["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            parts = {part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in p["part"]}
            out["notification-event"].append(parts)
        else:
            out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out


# -- the Subscription -----------------------------------------------------------------------------------------------
def subscription(topic: str, endpoint: str, content: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{EXT}/backport-subscription"]},
        "status": "requested",
        "reason": "bench/subscriptions.py",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{EXT}/backport-payload-content", "valueCode": content}]},
        },
    }


def wait_active(client: httpx.Client, sid: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        resource = client.get(f"/fhir/Subscription/{sid}").json()
        if resource.get("status") == "active":
            return
        if time.monotonic() > deadline or resource.get("status") == "error":
            raise SystemExit(f"the Subscription is {resource.get('status')}: {resource.get('error')}")
        time.sleep(0.1)


def events_counted(client: httpx.Client, sid: str) -> int:
    """events-since-subscription-start, as the server's $status says."""
    return int(subscription_status(client, sid)["events-since-subscription-start"])


def subscription_status(client: httpx.Client, sid: str) -> dict[str, Any]:
    """The server's $status parameters of the Subscription by name (``error``: the last delivery failure)."""
    found = client.get(f"/fhir/Subscription/{sid}/$status").json()
    parameters = found["entry"][0]["resource"]["parameter"]
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameters}


# -- the submissions ------------------------------------------------------------------------------------------------
def _answer(response: httpx.Response, answered: float, due: float, patient: str) -> dict[str, Any]:
    qr_id = None
    if response.status_code == 201:
        try:
            qr_id = response.json().get("id")
        except ValueError:
            qr_id = None
        if not qr_id:
            match = LOCATION.search(response.headers.get("Location", ""))
            qr_id = match.group(1) if match else None
    return {"status": response.status_code, "id": qr_id, "answered": answered, "due": due, "patient": patient}


async def open_loop(root: str, bodies: list[dict], rate: float, duration: float) -> list[dict[str, Any]]:
    """Submission i is due at start + i / rate whatever happened before; each one's 201 time and response id."""
    total = int(rate * duration)
    answers: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(base_url=root, timeout=60, limits=limits) as client:

        async def one(due: float, body: dict) -> None:
            try:
                response = await client.post("/fhir/QuestionnaireResponse", content=json.dumps(body), headers=headers)
            except httpx.TransportError:
                answers.append({"status": 0, "id": None, "answered": time.monotonic(), "due": due, "patient": ""})
                return
            answers.append(_answer(response, time.monotonic(), due, body["subject"]["reference"]))

        start = time.monotonic() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, bodies[i])))
            if i % max(1, int(rate)) == 0:
                progress("submitting", i, total)
        await asyncio.gather(*tasks)
        progress("submitting", total, total)
    return answers


def warm_up(client: httpx.Client, bodies: list[dict]) -> list[dict[str, Any]]:
    out = []
    for body in bodies:
        response = client.post("/fhir/QuestionnaireResponse", json=body)
        out.append(_answer(response, time.monotonic(), time.monotonic(), body["subject"]["reference"]))
    return out


# -- matching events to submissions ---------------------------------------------------------------------------------
def _response_of(focus_id: str, by_id: dict[str, dict]) -> dict | None:
    """The submission whose id prefixes the focus id (``<response id>-<part>``)."""
    for cut in (i for i, c in enumerate(focus_id) if c == "-"):
        if focus_id[:cut] in by_id:
            return by_id[focus_id[:cut]]
    return None


def match(notifications: list[tuple[float, float, dict]], measured: list[dict], warm: list[dict]) -> dict:
    by_id = {a["id"]: {**a, "warm": False} for a in measured if a["id"]}
    by_id.update({a["id"]: {**a, "warm": True} for a in warm if a["id"]})
    by_patient: dict[str, list[dict]] = {}
    for a in sorted(by_id.values(), key=lambda a: a["answered"]):
        by_patient.setdefault(a["patient"], []).append(a)
    seen: set[int] = set()
    latencies, since_timestamp, duplicates, unmatched, bundles = [], [], 0, 0, 0
    got_event: set[str] = set()
    first = last = None
    for arrived, wall, bundle in sorted(notifications, key=lambda n: n[0]):
        status = status_of(bundle)
        if status.get("type") != "event-notification":
            continue
        resources = {e.get("fullUrl"): e for e in bundle["entry"][1:]}
        counted = False
        for event in status["notification-event"]:
            number = int(event["event-number"])
            if number in seen:
                duplicates += 1
                continue
            seen.add(number)
            focus = event.get("focus", {}).get("reference", "")
            entry = resources.get(focus, {})
            submission = _response_of(focus.rpartition("/")[2], by_id)
            resource = entry.get("resource") or {}
            if entry.get("request", {}).get("method") == "PUT":  # closed by a later session: by its patient
                subject = resource.get("subject", {}).get("reference", "")
                earlier = [a for a in by_patient.get(subject, []) if a["answered"] <= arrived]
                submission = earlier[-1] if earlier else None  # id-only: no patient, not matched
            if submission is None:
                unmatched += 1
                continue
            if submission["warm"]:
                continue
            counted = True
            got_event.add(submission["id"])
            latencies.append(arrived - submission["answered"])
            stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
            since_timestamp.append(wall - stamp.timestamp())
        if counted:
            bundles += 1
            first = arrived if first is None else first
            last = arrived
    spread = (last - first) if first is not None and last is not None and last > first else math.nan
    return {
        "events": len(latencies),
        "notifications": bundles,
        "distinct_event_numbers": len(seen),
        "duplicates": duplicates,
        "unmatched": unmatched,
        "without_event": sum(1 for a in measured if a["id"] and a["id"] not in got_event),
        "latency": _percentiles(latencies),
        "since_event_timestamp": _percentiles(since_timestamp),
        "events_per_s": len(latencies) / spread if spread == spread else math.nan,
        "notifications_per_s": bundles / spread if spread == spread else math.nan,
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return 1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan

    return {
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * ordered[-1] if ordered else math.nan,
    }


# -- main ---------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FHIR_SERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="admin database URL",
    )
    parser.add_argument("--rate", type=float, default=50, help="scored submissions per second (open loop)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of submissions")
    parser.add_argument(
        "--topic", choices=sorted(TOPICS), default="score", help="score-written or flag-raised-or-closed"
    )
    parser.add_argument("--content", choices=["full-resource", "id-only"], default="full-resource")
    parser.add_argument("--clients", type=int, default=1000, help="clients the weekly sessions are spread over")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for the last events")
    parser.add_argument(
        "--worker-poll",
        type=float,
        help="FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS: how long an idle notification worker sleeps (server default 1)",
    )
    args = parser.parse_args()

    os.environ.update({"FHIR_SERVER_SUBSCRIPTION_WORKER": "true", "FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS": "true"})
    if args.worker_poll:
        os.environ["FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS"] = str(args.worker_poll)
    total = int(args.rate * args.duration)
    bodies = [r["body"] for r in submissions(total, args.clients, "m")]
    warm_bodies = [r["body"] for r in submissions(20, 20, "w")]
    with (
        fresh_postgres(args.postgres, "fhir_bench_subscriptions") as url,
        Receiver() as receiver,
    ):
        from fhir_server.store.migrate import upgrade

        upgrade(url)
        with start_server(url, args.workers) as server, httpx.Client(base_url=server.root, timeout=60) as client:
            created = client.post(
                "/fhir/Subscription", json=subscription(TOPICS[args.topic], receiver.url, args.content)
            )
            if created.status_code != 201:
                raise SystemExit(f"the Subscription was refused: {created.status_code} {created.text[:500]}")
            sid = created.json()["id"]
            wait_active(client, sid)
            warm = warm_up(client, warm_bodies)
            if not _drain(client, sid, receiver, 30):
                print(f"warm-up events not all delivered: {subscription_status(client, sid).get('error')}")
            print(f"open loop: {total:,} submissions at {args.rate:g}/s for {args.duration:g} s ...", flush=True)
            measured = asyncio.run(open_loop(server.root, bodies, args.rate, args.duration))
            drained = _drain(client, sid, receiver, args.drain)
            final = subscription_status(client, sid)
            counted = int(final["events-since-subscription-start"])
            server_error = (final.get("error") or {}).get("text")

    result = match(receiver.notifications(), measured, warm)
    missing = counted - result["distinct_event_numbers"]
    scored = [a for a in measured if a["status"] == 201]
    errors = len(measured) - len(scored) + sum(1 for a in warm if a["status"] != 201)
    loop_span = max(a["answered"] for a in measured) - min(a["due"] for a in measured) if measured else math.nan
    submitted = _percentiles([a["answered"] - a["due"] for a in measured])
    lat, stamp = result["latency"], result["since_event_timestamp"]
    rows = [
        (
            "scored submissions (open loop)",
            f"{len(scored):,} of {total:,} at {len(measured) / loop_span:.1f}/s; p50 / p99 "
            f"{submitted['p50_ms']:.0f} / {submitted['p99_ms']:.0f} ms",
            f"{args.rate:g}/s",
        ),
        (
            "latency: 201 answer → receiver, p50 / p95 / p99",
            f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} / {lat['p99_ms']:.0f} ms",
            "p99 ≤ 1,000 ms",
        ),
        ("  the slowest event", f"{lat['max_ms']:.0f} ms", ""),
        (
            "arrival minus the event's timestamp (server clock), p50 / p99",
            f"{stamp['p50_ms']:.0f} / {stamp['p99_ms']:.0f} ms",
            "",
        ),
        (
            "events delivered (matched to a measured submission)",
            f"{result['events']:,} in {result['notifications']:,} notifications",
            "",
        ),
        (
            "delivery rate: events/s, notifications/s",
            f"{result['events_per_s']:.1f}, {result['notifications_per_s']:.1f}",
            f"≥ {args.rate:g} events/s" if args.topic == "score" else "",
        ),
        (
            "events the server counted and the receiver never got",
            f"{missing:,} of {counted:,}" + ("" if drained else f" (not drained after {args.drain:g} s)"),
            "0",
        ),
        (
            "scored submissions without an event",
            f"{result['without_event']:,}" if args.topic == "score" else "n/a (not every session raises a Flag)",
            "0" if args.topic == "score" else "",
        ),
        ("events received twice / not matched to a submission", f"{result['duplicates']} / {result['unmatched']}", ""),
        ("the Subscription's last delivery error ($status)", server_error or "none", ""),
    ]
    poll = args.worker_poll or "1 (default)"
    print()
    print(
        f"topic {TOPICS[args.topic].rpartition('/')[2]}, {args.content}; {args.workers} workers; authorization off; "
        f"notification worker poll {poll} s"
    )
    print(table(["measure", "result", "target"], rows))
    print(f"non-201 answers: {errors}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"subscriptions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {"args": vars(args), "counted": counted, "missing": missing, "errors": errors, **result}
    document["server_error"] = server_error
    document["submissions"] = {"scored": len(scored), "latency": submitted}
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"results: {path.relative_to(ROOT)}")
    if errors or missing or (args.topic == "score" and result["without_event"]):
        sys.exit(1)


def _drain(client: httpx.Client, sid: str, receiver: Receiver, timeout: float) -> bool:
    """Wait until every event the server counted has arrived; False if some had not after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        counted = events_counted(client, sid)
        with receiver._lock:
            received = len(receiver.event_numbers)
        if received >= counted:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


if __name__ == "__main__":
    main()

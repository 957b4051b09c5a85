"""Health checks and metrics (issue 24, point 3): ``/healthz``, ``/readyz`` and ``/metrics``.

None of them takes a bearer token: the FHIR API's authorization is a dependency of its own routes (deps.py), and
these routes do not declare it, so a load balancer or an orchestrator can probe them.  They say nothing about any
patient, are not audited (no resource is read) and are never cached (``Cache-Control: no-store``).

- ``/healthz`` (liveness): the process answers.  Nothing else is checked, so a database outage never gets the
  process restarted, which would not fix it.
- ``/readyz`` (readiness): the database answers a trivial query within FHIR_SERVER_READINESS_TIMEOUT_SECONDS, its
  schema is at this code's head revision, and the secret key is configured and was checked against the database.
  503 otherwise, naming the failed check in the body (IETF draft "Health Check Response Format for HTTP APIs"),
  with a fixed text: never an exception's text (it may hold a host name, SQL, or a URL with a password).
- ``/metrics``: Prometheus text format, restricted by FHIR_SERVER_METRICS and FHIR_SERVER_METRICS_TOKEN.

Metrics with several worker processes (``fhir-server serve --workers N``): each process keeps its own registry, so
request counts and latencies are those of the process that answered the scrape; Prometheus, scraping one port,
sees a different process each time.  The process id is deliberately not a label: every restart would start new
series (cardinality), and sums over restarted workers would still be wrong.  The gauges read from the database
(outbox depths, the oldest pending age, dead deliveries) are computed at scrape time, so they are right whichever
process answers.  The pool gauge is the answering process's own pool.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.config import Settings
from fhir_server.messaging import outbox as message_outbox
from fhir_server.store import ehr_store, health, migrate, secret_store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now
from fhir_server.store.replica import Replica, counting_reads

log = logging.getLogger("fhir_server.health")

router = APIRouter(include_in_schema=False)
HEALTH_JSON = "application/health+json"
NO_STORE = {"Cache-Control": "no-store"}
# Methods outside this set share one label: a client inventing methods must not invent series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # a request no route took (404): never its raw path, which may hold ids


def install_health(app: FastAPI, settings: Settings) -> None:
    """The three routes, and the middleware that counts requests by route template.  Call it before the request
    context middleware is added, so that middleware stays outermost (it turns an escaped exception into the 500
    counted here)."""
    app.state.metrics = Metrics(app.state.engine, app.state.read_engine, app.state.fhir.repo.replica)
    app.state.readiness = ReadinessProbe(app.state.engine, settings.readiness_timeout_seconds)
    app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, routed_by=app)


# -- liveness and readiness ---------------------------------------------------------------------------------------
@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "pass"}, media_type=HEALTH_JSON, headers=NO_STORE)


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    checks = await request.app.state.readiness.run()
    failed = [name for name, check in checks.items() if check["status"] != "pass"]
    body: dict[str, Any] = {"status": "fail" if failed else "pass", "checks": checks}
    if failed:
        body["output"] = "not ready: " + ", ".join(failed)
    return JSONResponse(body, status_code=503 if failed else 200, media_type=HEALTH_JSON, headers=NO_STORE)


Check = dict[str, str]
PASS: Check = {"status": "pass"}


def _fail(output: str) -> Check:
    return {"status": "fail", "output": output}


class ReadinessProbe:
    """Runs the checks in one daemon thread at a time, and waits for it at most ``timeout`` seconds.

    Not on the request thread pool: a database that hangs (a dropped network, an exhausted pool) would otherwise
    leave one pool thread stuck per probe, and an orchestrator probes every few seconds.  While a probe is still
    running, later requests wait for that same probe instead of starting another.  A daemon thread, so a hung
    probe never holds up the process's exit."""

    def __init__(self, engine: Database, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: Future[dict[str, Check]] | None = None

    async def run(self) -> dict[str, Check]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(target=self._probe, args=(self._running,), name="readiness", daemon=True).start()
            running = self._running
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), self.timeout)
        except TimeoutError:
            return {"database": _fail(f"no answer to a trivial query within {self.timeout:g} s")}

    def _probe(self, result: Future[dict[str, Check]]) -> None:
        try:
            result.set_result(self.checks())
        except BaseException as exc:  # the checks catch their own errors; this only keeps the future from hanging
            result.set_result({"database": _fail("the readiness check failed unexpectedly")})
            log.error("readiness check failed unexpectedly (%s)", type(exc).__name__)

    def checks(self) -> dict[str, Check]:
        # Only the exception's type is logged: its text can name the host, the SQL, or carry a URL's password.
        try:
            health.ping(self.engine)
        except Exception as exc:
            log.warning("readiness: the database did not answer (%s)", type(exc).__name__)
            return {"database": _fail("the database did not answer a trivial query")}
        checks: dict[str, Check] = {"database": PASS}
        try:
            problem = migrate.revision_problem(self.engine)
        except Exception as exc:
            log.warning("readiness: the schema revision could not be read (%s)", type(exc).__name__)
            problem = "the schema revision could not be read"
        checks["migrations"] = _fail(problem + " (fhir-server db upgrade)") if problem else PASS
        try:
            configured = secret_store.keyring(self.engine).configured
            verified = secret_store.key_verified(self.engine)
        except Exception as exc:  # a key file that cannot be read, a malformed key
            log.warning("readiness: the secret key could not be loaded (%s)", type(exc).__name__)
            configured = verified = False
        if not configured:
            checks["secret_key"] = _fail("no usable secret key is configured")
        elif not verified:
            checks["secret_key"] = _fail("the secret key has not been checked against this database")
        else:
            checks["secret_key"] = PASS
        return checks


# -- metrics ------------------------------------------------------------------------------------------------------
class Metrics:
    """This app's registry (one per app, not prometheus_client's global one: tests run several apps in a process,
    and each must count its own requests)."""

    def __init__(self, engine: Database, read_engine: Database, replica: Replica | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fhir_server_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fhir_server_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["route"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # this process's CPU, memory and open files
        self.registry.register(DatabaseCollector(engine, read_engine))
        self.reads: Counter | None = None
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        if replica is not None:  # FHIR_SERVER_READ_REPLICA_URL (store/replica.py)
            self.reads = Counter(
                "fhir_server_reads",
                "Callers' reads, searches, history and version reads by route template and the database that "
                "answered: replica, or primary (the caller's own write not replayed yet, replica down or behind).",
                ["route", "target"],
                registry=self.registry,
            )
            self.registry.register(ReplicaCollector(replica))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # The labelled children by their labels: prometheus_client's labels() validates and locks on every call
        # (a measurable share of a read by id); a few dozen routes make a few hundred children.
        key = (route, method, status // 100)
        children = self._children.get(key)
        if children is None:
            method_label = method if method in METHODS else "other"
            children = (self.requests.labels(route, method_label, f"{status // 100}xx"), self.latency.labels(route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_reads(self, route: str, reads: dict[str, int]) -> None:
        if self.reads is not None:
            for target, count in reads.items():
                self.reads.labels(route, target).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ReplicaCollector(Collector):
    """The read replica as its poller last saw it (every ~0.2 s; no query at scrape time).  It being down never
    fails /readyz: the primary answers its reads."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.replica.state
        yield GaugeMetricFamily(
            "fhir_server_replica_up", "1 when the read replica answers and is replaying the primary.", float(state.up)
        )
        if state.lag_seconds is not None:  # unknown before the replica's first replayed transaction
            yield GaugeMetricFamily(
                "fhir_server_replica_lag_seconds",
                "Now minus the commit time of the last transaction the read replica replayed; 0 when it has "
                "replayed everything the primary had written at the last poll.",
                state.lag_seconds,
            )


class DatabaseCollector(Collector):
    """Gauges computed at each scrape from the database (the same whichever process answers) and from this
    process's connection pools.  A database that fails to answer leaves them out of the scrape and sets
    ``fhir_server_metrics_database_up`` to 0, rather than failing the whole scrape."""

    def __init__(self, engine: Database, read_engine: Database) -> None:
        self.engine = engine
        self.read_engine = read_engine

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check for name clashes at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._pools()
        try:
            families = list(self._outboxes())
        except Exception as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            families = []
        yield GaugeMetricFamily(
            "fhir_server_metrics_database_up",
            "1 when the database answered this scrape's queries.",
            float(bool(families)),
        )
        yield from families

    def _pools(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fhir_server_db_pool_connections_in_use",
            "Connections checked out of this process's pool (QueuePool only), by pool.",
            labels=["pool"],
        )
        pools = {"write": self.engine} | ({"read": self.read_engine} if self.read_engine is not self.engine else {})
        for name, engine in pools.items():
            in_use = health.pool_in_use(engine)
            if in_use is not None:
                family.add_metric([name], in_use)
        yield family

    def _outboxes(self) -> Iterator[GaugeMetricFamily]:
        for prefix, what, (count, oldest) in (
            ("fhir_server_ehr_outbox", "EHR write-back deliveries", ehr_store.pending_stats(self.engine, utc_now())),
            ("fhir_server_message_outbox", "email and SMS messages", message_outbox.pending_stats(self.engine)),
        ):
            yield GaugeMetricFamily(f"{prefix}_pending", f"{what} pending.", count)
            yield GaugeMetricFamily(
                f"{prefix}_oldest_pending_age_seconds",
                f"Age of the oldest pending row of the {what} (0 when none is pending).",
                oldest or 0.0,
            )
        dead = GaugeMetricFamily(
            "fhir_server_ehr_outbox_dead",
            "EHR write-back deliveries given up (fhir-server outbox list --dead), by EHR registration id.",
            labels=["ehr"],
        )
        for ehr_id, count in sorted(ehr_store.dead_by_registration(self.engine).items()):
            dead.add_metric([str(ehr_id)], count)
        yield dead


class RouteTemplates:
    """The full path template of a matched route (``/fhir/{resource_type}/{resource_id}``), never the request's
    path: no ids, no query.

    FastAPI (0.16x) hands a request to the route as declared in its router, whose ``path`` lacks the prefix it was
    included under (``/fhir``); the full templates are read once, at the first request (every route is added by
    then), from the included routers' route contexts.  Should a FastAPI version not offer them, or a route be
    included under two prefixes, the route's own template is used: less precise, still without ids."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._templates: dict[int, str] | None = None

    def _build(self) -> dict[int, str]:
        found: dict[int, set[str]] = {}
        for route in getattr(getattr(self.app, "router", None), "routes", []):
            contexts = getattr(route, "effective_route_contexts", None)
            if callable(contexts):
                for context in contexts():
                    original, path = getattr(context, "original_route", None), getattr(context, "path_format", None)
                    if original is not None and isinstance(path, str):
                        found.setdefault(id(original), set()).add(path)
        return {key: next(iter(paths)) for key, paths in found.items() if len(paths) == 1}

    def of(self, scope: Scope) -> str:
        if self._templates is None:
            self._templates = self._build()
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if isinstance(route, Mount):
            return route.path + "/{path}"
        known = self._templates.get(id(route))
        if known is not None:
            return known
        path = getattr(route, "path", None)
        return path if isinstance(path, str) and path else UNMATCHED


class RequestMetricsMiddleware:
    """Pure ASGI (as middleware.py's): counts each HTTP request once its response has ended."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routed_by: FastAPI) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates(routed_by)  # the app whose routes match (``app`` is the next middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}  # what the request context middleware answers for an exception that escapes

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with counting_reads() as reads:  # the handler's reads by target (store/replica.py)
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                elapsed = time.perf_counter() - started
                route = self.templates.of(scope)
                self.metrics.observe(route, scope["method"], status["code"], elapsed)
                self.metrics.observe_reads(route, reads)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics == "off":
        return PlainTextResponse("Not Found", status_code=404, headers=NO_STORE)
    if settings.metrics == "loopback" and not _from_loopback(request):
        return PlainTextResponse(
            "metrics are served to loopback clients only (FHIR_SERVER_METRICS)", status_code=403, headers=NO_STORE
        )
    token = settings.metrics_token.get_secret_value()
    if token and not _bearer_matches(request.headers.get("authorization"), token):
        headers = {**NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'}
        return PlainTextResponse("a bearer token is required", status_code=401, headers=headers)
    # Off the event loop: the database gauges query the database.
    body = await run_in_threadpool(request.app.state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


def _from_loopback(request: Request) -> bool:
    """The client address as TrustedProxyHeaders decided it (middleware.py): behind a trusted proxy, the forwarded
    client's, not the proxy's."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

"""create_app(settings): routers, middleware, error handlers and the objects handlers depend on."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from fhir_server import __version__
from fhir_server.api import export as export_api
from fhir_server.api import hot_routes, instance, operations, system
from fhir_server.api import type as type_api
from fhir_server.api.error_handlers import install_error_handlers
from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.audit import AuditWriter
from fhir_server.auth.bearer import BearerAuthenticator
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.retention import RetentionWorker
from fhir_server.auth.revocation import RevocationList
from fhir_server.cds_hooks.security import CdsClientVerifier
from fhir_server.config import Settings
from fhir_server.ehr.outbox import queue_write_back
from fhir_server.ehr.worker import OutboxWorker
from fhir_server.engine.composition import build_core
from fhir_server.engine.library_sync import sync_resources
from fhir_server.export.storage import DirectoryStorage
from fhir_server.export.worker import ExportWorker
from fhir_server.i18n import for_server
from fhir_server.measure_tasks.tasks import MeasureTasks
from fhir_server.measure_tasks.worker import ExpiryWorker
from fhir_server.messaging.worker import MessageWorker
from fhir_server.middleware import RequestContextMiddleware
from fhir_server.operations import published_definitions
from fhir_server.outreach.completion import close_requests, in_order
from fhir_server.store import secret_store
from fhir_server.store.errors import DATABASE_ERRORS
from fhir_server.subscriptions.worker import SubscriptionWorker
from fhir_server.web import auth_routes
from fhir_server.web.audit_metrics import AuditCollector
from fhir_server.web.cds_routes import router as cds_router
from fhir_server.web.form_pages import PageTemplates
from fhir_server.web.form_routes import install_form
from fhir_server.web.health_routes import install_health
from fhir_server.web.install import install_authorization_server
from fhir_server.web.launch_routes import install_launch
from fhir_server.web.link_routes import install_links

log = logging.getLogger("fhir_server")


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, FHIR models, search registry, library) to the collector's permanent
    generation.  A full collection walks every object it tracks; with these ~190,000 in it, one took 100-250 ms
    under load, and under concurrent submissions one ran every ~20 s per worker (objects of requests in flight
    outlive the young generations), stalling every request in the worker: the benchmark's p99 spikes.  Frozen,
    they are never walked again; they were never going to be freed.  Garbage is collected first so none is kept."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, owns_process: bool = False) -> FastAPI:
    """``owns_process``: the app is the process's only one (a server worker), so what its startup made lives as
    long as the process and may be frozen out of the garbage collector's full collections."""
    settings = settings or Settings()
    core = build_core(settings)
    engine, repository, registry, library, fhir = core.engine, core.repository, core.registry, core.library, core.fhir
    audit = AuditWriter(repository)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_required:
            log.warning(
                "AUTHORIZATION IS OFF (FHIR_SERVER_AUTH_REQUIRED=false): anyone who can reach this port can read and "
                "change every record, and nothing is audited.  Use this only for local development."
            )
        # Refuses (SecretKeyError) when stored secrets cannot be read with the configured key: better than failing
        # on every token later.  `fhir-server serve` runs the same check first, to say so in one line.
        log.info(await run_in_threadpool(secret_store.check_at_startup, engine))
        if settings.load_library:
            # with the OperationDefinitions of our own operations, which the CapabilityStatement names
            resources = [*library.resources(), *published_definitions()]
            summary = await run_in_threadpool(sync_resources, fhir, resources)
            log.info("library: %d stored, %d already current", summary.created, summary.unchanged)
        if settings.outbox_worker:
            app.state.outbox_worker.start()  # resumes the deliveries left pending by the last run
        if settings.export_worker:
            app.state.export_worker.start()  # resumes the export jobs the last run left unfinished
        if settings.subscription_worker:
            app.state.subscription_worker.start()  # resumes the notifications the last run left undelivered
        if settings.message_worker:
            app.state.message_worker.start()  # sends the email and SMS the last run left pending
        if settings.task_expiry_worker:
            app.state.task_expiry_worker.start()  # cancels the requests that expired while no server ran
        if settings.audit_retention_worker and settings.audit_retention_days:
            app.state.retention_worker.start()  # removes the records of reads older than the retention
        if owns_process:
            freeze_startup_objects()
        yield
        app.state.outbox_worker.stop()
        app.state.export_worker.stop()  # a running job is given back, to be resumed from its last finished type
        app.state.subscription_worker.stop()
        app.state.message_worker.stop()  # a message being sent is finished; the rest wait, pending
        app.state.task_expiry_worker.stop()
        app.state.retention_worker.stop()
        audit.close()  # stores the audit records still queued
        core.close()

    app = FastAPI(
        lifespan=lifespan,
        title="fhir-server",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    # The app's message catalogues, read and checked once: a missing or stale translation stops the start here,
    # naming the file and the message, rather than showing a client a half-translated page.
    app.state.catalogues = for_server(settings.content_pack_paths())
    app.state.page_templates = PageTemplates(app.state.catalogues)
    app.state.engine = engine
    app.state.read_engine = repository.read_engine
    app.state.fhir = fhir
    app.state.keys = KeyStore(engine)
    app.state.revocations = RevocationList(engine, settings.refresh_token_lifetime_seconds)

    app.state.access = AccessPolicy(registry, patients_see_clinician_only=settings.client_sees_therapist_rating)
    app.state.audit = audit
    app.state.bearer = BearerAuthenticator(settings, app.state.keys, getattr(app.state, "revocations", None))

    app.state.cds_verifier = CdsClientVerifier(engine)

    install_error_handlers(app, DATABASE_ERRORS)
    # Routes are tried in order, so the FHIR API's come first (a POST of a resource was matched against ~45
    # routes before its own, ~4 % of a scored submission's CPU).  None takes another's path: all are under /fhir,
    # and the one other route there, the SMART discovery document, goes before /{type}/{id}, which would take it.
    # Among them /metadata, /_history and /{type}/_search must win over /{type}/{id}.  Ahead of all, the read by
    # id and the type search in FHIR's own path syntax, which no other route's path fits (api/hot_routes.py).
    app.include_router(hot_routes.router, prefix="/fhir")
    app.include_router(system.router, prefix="/fhir")
    app.include_router(export_api.router, prefix="/fhir")  # a Bulk Data export's status URL and files
    app.include_router(operations.router, prefix="/fhir")
    app.include_router(type_api.router, prefix="/fhir")
    app.include_router(auth_routes.fhir_discovery)
    app.include_router(instance.router, prefix="/fhir")
    app.include_router(cds_router)
    install_authorization_server(app, settings, fhir)
    install_form(app, settings)  # the SMART app's rating form under /app
    # EHR write-back: a submission from an EHR launch queues its delivery in its own transaction; the worker sends
    # it with the launch's token while that session lives, else with a Backend Services token.
    app.state.outbox_worker = OutboxWorker(repository, app.state.keys, settings, app.state.app_sessions)
    # A submitted form also closes the requests (SDC Tasks) it answers, in the same transaction (outreach/); the
    # requests nobody answered in time are cancelled by a sweep.
    tasks = MeasureTasks(fhir)
    app.state.after_submission = in_order(
        queue_write_back(app.state.app_sessions, app.state.outbox_worker.wake), close_requests(tasks)
    )
    app.state.task_expiry_worker = ExpiryWorker(tasks, settings.task_expiry_poll_seconds)
    # Audit retention (FHIR_SERVER_AUDIT_RETENTION_DAYS): the records of reads older than that are swept away.
    app.state.retention_worker = RetentionWorker(repository, settings.audit_retention_days)
    # Bulk Data $export: jobs in the database, run by a worker in this process, files in the export folder.
    app.state.export_storage = DirectoryStorage(settings.export_dir)
    app.state.export_worker = ExportWorker(repository, registry, app.state.export_storage, settings, audit)
    # Topic-based subscriptions: events queued with the writes (engine/admission.py), notified by this worker.
    app.state.subscription_worker = SubscriptionWorker(repository, registry, settings)
    fhir.subscriptions.wake = app.state.subscription_worker.wake  # delivery starts when the write commits
    # Email and SMS to clients (issue 22): rows queued with messaging.enqueue(..., wake=message_worker.wake), sent
    # by this worker through the configured transports (on the sandbox, captured and shown at /sandbox/mailbox).
    app.state.message_worker = MessageWorker(repository, settings)
    if settings.sandbox:
        from fhir_server.web import sandbox_mailbox_routes

        app.include_router(sandbox_mailbox_routes.router)
    install_links(app, settings)  # a Task asking for a form link gets one; /app/l/<token> opens it
    install_launch(app, settings)  # /app/launch, /app/callback (and /sandbox when switched on)
    # /healthz, /readyz and /metrics, outside the authorization layer; before the next line, so that stays outermost
    install_health(app, settings)
    app.state.metrics.registry.register(AuditCollector(audit))  # the audit batch lag (web/audit_metrics.py)
    app.add_middleware(RequestContextMiddleware)
    return app

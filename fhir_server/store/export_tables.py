"""The Bulk Data export jobs (fhir_server/export): one row per ``$export`` kick-off until its files are removed.

A job is durable: the worker that runs it records each finished resource type and its file in ``output``, so a
job whose process died is resumed (by any process, once its lease has run out) from the type it was writing.
``caller`` keeps what the access policy needs to run the job as the client that asked (its scopes, patient,
client and user: never a token); ``owner`` is a digest of who may poll, fetch and cancel it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, text

from fhir_server.store.tables import metadata

ACTIVE = ("queued", "running")
_ACTIVE_SQL = "status IN ('queued', 'running')"

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", String(32), primary_key=True),  # random: it is part of the status and file URLs
    Column("owner", String(64), nullable=False),  # sha256 of issuer, client, user and patient ("" without auth)
    Column("client_key", String(64), nullable=False),  # sha256 of issuer and client: one active job per client
    Column("client", String(255), nullable=False),  # the client id, for the administrator's list
    Column("caller", Text, nullable=False),  # JSON: the token's claims the access policy reads
    Column("request_url", Text, nullable=False),  # the kick-off URL (the manifest's ``request``)
    Column("parameters", Text, nullable=False),  # JSON: the parsed kick-off (export/request.py)
    Column("status", String(16), nullable=False),  # queued | running | completed | failed
    Column("transaction_time", DateTime, nullable=True),  # naive UTC, set when the job first runs
    Column("types_total", Integer, nullable=False),
    Column("types_done", Integer, nullable=False, default=0),
    Column("resources_written", BigInteger, nullable=False, default=0),
    Column("current_type", String(64), nullable=True),
    Column("output", Text, nullable=False),  # JSON list of {"type", "name", "count"}: finished files
    Column("error", Text, nullable=True),  # why a job failed (never PHI)
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", DateTime, nullable=True),  # claimed by a worker until then
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("expires_at", DateTime, nullable=True),  # files and row are removed after this
    Index("ix_export_jobs_due", "status", "lease_until"),
    # One job at a time per client, kept by the database itself: two concurrent kick-offs cannot both insert.
    Index(
        "uq_export_jobs_active_client",
        "client_key",
        unique=True,
        postgresql_where=text(_ACTIVE_SQL),
        sqlite_where=text(_ACTIVE_SQL),
    ),
    Index("ix_export_jobs_expires", "expires_at"),
)

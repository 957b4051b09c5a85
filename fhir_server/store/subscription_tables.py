"""Topic-based subscriptions (fhir_server/subscriptions): each Subscription's delivery state, and its outbox of
events, numbered per subscription in the order their transactions committed the counter.

``subscriptions`` keeps, beside the FHIR resource, what delivery needs and the resource must not carry: the
creator's claims (the access policy applied to every notified resource, never a token), the event counter, the
failure count and the backoff.  ``subscription_events`` rows are written in the transaction that causes them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint

from fhir_server.store.tables import BigId, metadata

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),  # the Subscription resource's id
    Column("topic", Text, nullable=False),  # the topic canonical
    Column("resource_type", String(64), nullable=False),  # the topic's resource type, for the write-time lookup
    Column("filters", Text, nullable=False),  # JSON list of search query strings (``patient=Patient/x``)
    Column("endpoint", Text, nullable=False),
    Column("headers", Text, nullable=False),  # JSON list of "Name: value" (channel.header)
    Column("content", String(16), nullable=False),  # empty | id-only | full-resource
    Column("heartbeat_seconds", Integer, nullable=True),
    Column("timeout_seconds", Integer, nullable=False),
    Column("max_count", Integer, nullable=False),  # events per notification
    Column("authenticated", Boolean, nullable=False),  # created under a token (else: authorization off)
    Column("caller", Text, nullable=False),  # JSON: the creator's claims the access policy reads
    Column("status", String(16), nullable=False),  # requested | active | error | off
    Column("events_since_start", BigInteger, nullable=False),  # the last event number given out
    Column("failures", Integer, nullable=False),  # consecutive failed deliveries
    Column("error", Text, nullable=True),  # why it is in error (never PHI)
    Column("retry_at", DateTime, nullable=True),  # backoff: nothing is sent before
    Column("lease_until", DateTime, nullable=True),  # claimed by a worker until then
    Column("last_sent_at", DateTime, nullable=True),  # for heartbeats
    Column("created_at", DateTime, nullable=False),
    Index("ix_subscriptions_type", "resource_type", "status"),
)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("event_number", BigInteger, nullable=False),
    Column("focus_type", String(64), nullable=False),
    Column("focus_id", String(64), nullable=False),
    Column("focus_version", Integer, nullable=False),
    Column("occurred_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),  # null: still to be delivered
    UniqueConstraint("subscription_id", "event_number", name="uq_subscription_events_number"),
)

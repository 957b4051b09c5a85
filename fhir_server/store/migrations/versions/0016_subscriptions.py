"""Topic-based subscriptions and their event outbox (store/subscription_tables.py).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("filters", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("content", sa.String(16), nullable=False),
        sa.Column("heartbeat_seconds", sa.Integer, nullable=True),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("max_count", sa.Integer, nullable=False),
        sa.Column("authenticated", sa.Boolean, nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("events_since_start", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("retry_at", sa.DateTime, nullable=True),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("last_sent_at", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_subscriptions_type", "subscriptions", ["resource_type", "status"])
    op.create_table(
        "subscription_events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("event_number", sa.BigInteger, nullable=False),
        sa.Column("focus_type", sa.String(64), nullable=False),
        sa.Column("focus_id", sa.String(64), nullable=False),
        sa.Column("focus_version", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("subscription_id", "event_number", name="uq_subscription_events_number"),
    )


def downgrade() -> None:
    op.drop_table("subscription_events")
    op.drop_table("subscriptions")

"""Bulk Data export jobs (store/export_tables.py).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("client_key", sa.String(64), nullable=False),
        sa.Column("client", sa.String(255), nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transaction_time", sa.DateTime, nullable=True),
        sa.Column("types_total", sa.Integer, nullable=False),
        sa.Column("types_done", sa.Integer, nullable=False),
        sa.Column("resources_written", sa.BigInteger, nullable=False),
        sa.Column("current_type", sa.String(64), nullable=True),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_export_jobs_due", "export_jobs", ["status", "lease_until"])
    active = sa.text("status IN ('queued', 'running')")  # one active job per client (export_tables.py)
    op.create_index(
        "uq_export_jobs_active_client",
        "export_jobs",
        ["client_key"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )
    op.create_index("ix_export_jobs_expires", "export_jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("export_jobs")

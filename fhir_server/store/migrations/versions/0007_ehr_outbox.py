"""EHR registrations and the write-back outbox.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ehr_registrations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("issuer", sa.String(2000), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("client_secret", sa.Text, nullable=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("resource_types", sa.Text, nullable=False),
        sa.Column("backend_client_id", sa.String(255), nullable=True),
        sa.Column("max_requests_per_second", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "ehr_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ehr_id", sa.BigInteger, nullable=False),
        sa.Column("response_id", sa.String(64), nullable=False),
        sa.Column("token_ref", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_ehr_outbox_due", "ehr_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_ehr_outbox_response", "ehr_outbox", ["response_id"])
    op.create_index("ix_ehr_outbox_ehr", "ehr_outbox", ["ehr_id", "status"])


def downgrade() -> None:
    op.drop_table("ehr_outbox")
    op.drop_table("ehr_registrations")

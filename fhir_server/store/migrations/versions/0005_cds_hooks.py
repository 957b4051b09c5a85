"""CDS Hooks: registered EHR clients and card feedback.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cds_clients",
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("jwks_uri", sa.String(1024), nullable=True),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "cds_feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("card", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("override_reason", sa.Text, nullable=True),
        sa.Column("user_comment", sa.Text, nullable=True),
        sa.Column("outcome_timestamp", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_cds_feedback_card", "cds_feedback", ["card"])


def downgrade() -> None:
    op.drop_index("ix_cds_feedback_card", "cds_feedback")
    op.drop_table("cds_feedback")
    op.drop_table("cds_clients")

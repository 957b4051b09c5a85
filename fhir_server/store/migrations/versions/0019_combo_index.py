"""The combination index (store/tables.py ``idx_combo``, search/combos.py): a client's results of one measure,
newest first, as one index range.  Filled here from the stored Observations in batches, so a search answered from
it after the upgrade finds every earlier result (about 1 minute per 500,000 Observations).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from fhir_server.store.migrations.combo_fill import fill

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idx_combo",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(80), nullable=False),
        sa.Column("element", sa.Integer, nullable=True),
        sa.Column("ref_type", sa.String(64), nullable=False),
        sa.Column("ref_id", sa.String(64), nullable=False),
        sa.Column("token_mode", sa.String(1), nullable=False),
        sa.Column("system", sa.String(256), nullable=False),
        sa.Column("code", sa.String(256), nullable=False),
        sa.Column("sort_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_idx_combo_resource", "idx_combo", ["resource_type", "resource_id"])
    op.create_index(
        "ix_idx_combo_value", "idx_combo",
        ["resource_type", "param", "ref_id", "code", "ref_type", "token_mode", "system", sa.text("sort_at DESC"),
         "resource_id"],
    )  # fmt: skip
    fill(op.get_bind(), "subject+code:-date")  # the Observations' combination (the Flags' came with 0020)


def downgrade() -> None:
    op.drop_table("idx_combo")

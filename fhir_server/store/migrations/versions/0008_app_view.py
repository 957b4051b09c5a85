"""App sessions remember what the launch opens (the rating form or the clinician view).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("app_sessions") as batch:
        batch.add_column(sa.Column("app_view", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_sessions") as batch:
        batch.drop_column("app_view")

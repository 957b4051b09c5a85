"""A CDS Hooks card's appContext: an EHR launch keeps the one it was given (``oauth_launches.app_context``, passed
to the app in the token response), and an app session the Flag such a card points the clinician view at
(``app_sessions.app_flag``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_launches") as batch:
        batch.add_column(sa.Column("app_context", sa.Text, nullable=True))
    with op.batch_alter_table("app_sessions") as batch:
        batch.add_column(sa.Column("app_flag", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_sessions") as batch:
        batch.drop_column("app_flag")
    with op.batch_alter_table("oauth_launches") as batch:
        batch.drop_column("app_context")

"""Sign-in: users linked to an external OpenID Connect identity (and users without a local password), the
identity-provider round trip in the login session, and failed sign-ins for throttling.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a column's nullability in place (Alembic copies the table).
    with op.batch_alter_table("oauth_users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(256), nullable=True)
        batch.add_column(sa.Column("external_issuer", sa.String(500), nullable=True))
        batch.add_column(sa.Column("external_subject", sa.String(255), nullable=True))
        batch.create_unique_constraint("uq_oauth_users_external", ["external_issuer", "external_subject"])
    op.add_column("oauth_login_sessions", sa.Column("external_login", sa.Text, nullable=True))
    op.create_table(
        "oauth_login_failures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("failed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_oauth_login_failures_key", "oauth_login_failures", ["key_hash", "failed_at"])
    op.create_index("ix_oauth_login_failures_at", "oauth_login_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_table("oauth_login_failures")
    op.drop_column("oauth_login_sessions", "external_login")
    # Users without a password cannot be kept by the older schema (they could not sign in there anyway).
    op.execute("DELETE FROM oauth_users WHERE password_hash IS NULL")
    with op.batch_alter_table("oauth_users") as batch:
        batch.drop_constraint("uq_oauth_users_external", type_="unique")
        batch.drop_column("external_subject")
        batch.drop_column("external_issuer")
        batch.alter_column("password_hash", existing_type=sa.String(256), nullable=False)

"""Secrets at rest: the table holding the secret key's check value (store/secret_store.py), and room for an
encrypted PKCE verifier in ``app_sessions.code_verifier`` (a 128-character verifier is ~190 characters sealed).

Existing plain-text secrets (signing keys, EHR client secrets, app-session tokens) are NOT encrypted here: a
migration runs without the secret key (``fhir-server db upgrade`` in a deploy step need not hold it), and a
migration that needed it would make the schema depend on a secret.  The server encrypts them at start-up instead,
where it has the key (secret_store.check_at_startup); until then a server without a key refuses to start.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_key_check",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    # SQLite does not enforce VARCHAR lengths, so only PostgreSQL needs the wider type (and SQLite would need a copy
    # of the table to change it).
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("app_sessions", "code_verifier", type_=sa.Text, existing_type=sa.String(128))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("app_sessions", "code_verifier", type_=sa.String(128), existing_type=sa.Text)
    op.drop_table("secret_key_check")

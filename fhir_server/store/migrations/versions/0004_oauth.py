"""The authorization server: clients, users, authorization codes, refresh tokens, launch contexts, login sessions,
seen client-assertion jtis and revocations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("client_type", sa.String(16), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=True),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("jwks_url", sa.String(2000), nullable=True),
        sa.Column("origins", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "oauth_users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("fhir_user", sa.String(200), nullable=False),
        sa.Column("may_pick_patient", sa.Boolean, nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "oauth_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("sid", sa.String(64), nullable=True),
    )
    op.create_index("ix_oauth_codes_expires", "oauth_codes", ["expires_at"])
    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_index("ix_oauth_refresh_sid", "oauth_refresh_tokens", ["sid"])
    op.create_index("ix_oauth_refresh_expires", "oauth_refresh_tokens", ["expires_at"])
    op.create_table(
        "oauth_launches",
        sa.Column("launch_id", sa.String(64), primary_key=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("encounter", sa.String(64), nullable=True),
        sa.Column("fhir_context", sa.Text, nullable=False),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("need_patient_banner", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "oauth_login_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("authenticated_at", sa.DateTime, nullable=True),
        sa.Column("pending", sa.Text, nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_oauth_sessions_expires", "oauth_login_sessions", ["expires_at"])
    op.create_table(
        "oauth_assertion_jtis",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_oauth_jtis_expires", "oauth_assertion_jtis", ["expires_at"])
    op.create_table(
        "oauth_revoked_tokens",
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "oauth_revoked_grants",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("revoked_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "oauth_revoked_grants",
        "oauth_revoked_tokens",
        "oauth_assertion_jtis",
        "oauth_login_sessions",
        "oauth_launches",
        "oauth_refresh_tokens",
        "oauth_codes",
        "oauth_users",
        "oauth_clients",
    ):
        op.drop_table(name)

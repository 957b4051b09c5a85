"""The SMART app's server-side sessions (fhir_server/smart/sessions.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("submission_key", sa.String(64), nullable=False),
        sa.Column("launch_state", sa.String(128), nullable=True),
        sa.Column("code_verifier", sa.String(128), nullable=True),
        sa.Column("launch_iss", sa.Text, nullable=True),
        sa.Column("ehr_id", sa.BigInteger, nullable=True),
        sa.Column("access_token", sa.Text, nullable=True),
        sa.Column("refresh_token", sa.Text, nullable=True),
        sa.Column("token_expires_at", sa.DateTime, nullable=True),
        sa.Column("scope", sa.Text, nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("encounter", sa.String(64), nullable=True),
        sa.Column("fhir_user", sa.String(200), nullable=True),
        sa.Column("fhir_context", sa.Text, nullable=True),
        sa.Column("need_patient_banner", sa.Boolean, nullable=False),
        sa.Column("smart_style_url", sa.Text, nullable=True),
        sa.Column("questionnaire", sa.Text, nullable=True),
        sa.Column("draft", sa.Text, nullable=True),
        sa.Column("response_id", sa.String(64), nullable=True),
        sa.Column("submitted_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_app_sessions_expires", "app_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_app_sessions_expires", "app_sessions")
    op.drop_table("app_sessions")

"""The client's side between sessions: one-time form links, the message outbox that sends them
(store/client_request_tables.py), and the app session's language and the Task it completes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "form_links",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_sealed", sa.Text, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("questionnaire", sa.Text, nullable=False),
        sa.Column("ehr_id", sa.BigInteger, nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient_sealed", sa.Text, nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_form_links_task", "form_links", ["task_id"])
    op.create_table(
        "message_outbox",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_message_outbox_due", "message_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_message_outbox_subject", "message_outbox", ["subject_id"])
    with op.batch_alter_table("app_sessions") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))
        batch.add_column(sa.Column("task_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_sessions") as batch:
        batch.drop_column("task_id")
        batch.drop_column("language")
    op.drop_table("message_outbox")
    op.drop_table("form_links")

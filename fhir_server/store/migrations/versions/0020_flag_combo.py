"""The Flags' combination index (search/combos.py ``subject+status``): a client's Flags by status, in id order, as
one index range.  Filled here from the stored Flags (a few per client).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from alembic import op

from fhir_server.store.migrations.combo_fill import fill

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    fill(op.get_bind(), "subject+status")


def downgrade() -> None:
    op.execute("DELETE FROM idx_combo WHERE param = 'subject+status'")

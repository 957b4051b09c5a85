"""PostgreSQL extended statistics on the token index, so the planner knows how many rows share a
(resource_type, param, code): without them it guesses one row for "Flag status=active" among thousands and
picks a join order that re-reads them all per Flag (bench/search.py: p99 382 ms → 11 ms with the statistics).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE STATISTICS IF NOT EXISTS idx_token_type_param_code (mcv) ON resource_type, param, code FROM idx_token"
    )
    op.execute("ALTER STATISTICS idx_token_type_param_code SET STATISTICS 1000")
    op.execute(
        "CREATE STATISTICS IF NOT EXISTS idx_reference_type_param_target (mcv) "
        "ON resource_type, param, target_type FROM idx_reference"
    )
    op.execute("ALTER STATISTICS idx_reference_type_param_target SET STATISTICS 1000")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP STATISTICS IF EXISTS idx_reference_type_param_target")
    op.execute("DROP STATISTICS IF EXISTS idx_token_type_param_code")

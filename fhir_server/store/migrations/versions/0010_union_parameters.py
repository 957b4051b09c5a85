"""Index rows no search reads any more: Observation ``combo-*`` parameters are searched over the ``code`` /
``component-*`` rows (search/registry.py: UNION_PARAMETERS), so their own rows go.  (Composite rows written for
elements lacking a component are left: harmless, and ``fhir-server reindex`` drops them.)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("idx_token", "idx_quantity")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"DELETE FROM {table} WHERE resource_type = 'Observation' AND param LIKE 'combo-%'")


def downgrade() -> None:
    # The rows can be written again from the resources: fhir-server reindex (with the code that indexed them).
    pass

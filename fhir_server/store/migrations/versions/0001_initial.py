"""Initial schema: resources, versions, conditional keys and the search index tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

from fhir_server.store import tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The first revision creates the schema from the table definitions as they stood when it was written; later
# revisions must use explicit op.* calls so that history stays reproducible.
_TABLES = [
    "resources",
    "resource_versions",
    "conditional_keys",
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_quantity",
    "idx_number",
    "idx_uri",
]


def upgrade() -> None:
    bind = op.get_bind()
    for name in _TABLES:
        tables.metadata.tables[name].create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(_TABLES):
        tables.metadata.tables[name].drop(bind)

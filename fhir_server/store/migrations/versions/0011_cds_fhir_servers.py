"""CDS Hooks: the FHIR bases each CDS client may name as ``fhirServer`` (cds_hooks/fhir_bases.py).  Clients
registered before have none, so they must prefetch until ``fhir-server cds-clients add --fhir-server`` names one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cds_clients") as batch:
        batch.add_column(sa.Column("fhir_servers", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cds_clients") as batch:
        batch.drop_column("fhir_servers")

"""Supervisors' reports (issue 20): the reporting index (store/tables.py ``idx_report``, reporting/facts.py) filled
from the stored Observations and Flags in batches, so the first report after the upgrade counts every earlier
session; and the organisations each supervisor may report on (``supervised_organizations``).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BATCH = 1000
COLUMNS = (
    "resource_type", "resource_id", "param", "element", "code", "subject_id", "series", "at", "month", "session",
    "encounter", "clinician", "program", "value", "below", "change", "status", "acknowledged_at",
)  # fmt: skip


def upgrade() -> None:
    from fhir_server.reporting.facts import report_rows

    op.create_table(
        "idx_report",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(16), nullable=False),
        sa.Column("element", sa.Integer, nullable=True),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("series", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("session", sa.String(140), nullable=False),
        sa.Column("encounter", sa.String(140), nullable=True),
        sa.Column("clinician", sa.String(140), nullable=True),
        sa.Column("program", sa.String(140), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("below", sa.Boolean, nullable=True),
        sa.Column("change", sa.String(128), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_idx_report_resource", "idx_report", ["resource_id", "resource_type"])
    # on PostgreSQL the value index covers what reports count (index-only scans); SQLite ignores INCLUDE
    counted = ["subject_id", "series", "value", "below", "change", "program", "clinician", "month", "session",
               "encounter", "acknowledged_at", "resource_id"]  # fmt: skip
    op.create_index("ix_idx_report_value", "idx_report", ["param", "code", "at"], postgresql_include=counted)
    op.create_index(
        "ix_idx_report_subject", "idx_report", ["param", "subject_id", "series", "code", "at"],
        postgresql_include=["below"],
    )  # fmt: skip
    op.create_table(
        "supervised_organizations",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("organization", sa.String(140), primary_key=True),
    )
    # the dates typed: SQLite then stores them as the server's writes do (migration 0021)
    dates = ("at", "acknowledged_at")
    table = sa.table("idx_report", *(sa.column(name, sa.DateTime if name in dates else None) for name in COLUMNS))
    bind = op.get_bind()
    after = ("", "")
    while True:
        found = bind.execute(
            sa.text(
                "SELECT resource_type, id, content FROM resources WHERE deleted = :no"
                " AND resource_type IN ('Flag', 'Observation') AND (resource_type, id) > (:type, :id)"
                " ORDER BY resource_type, id LIMIT :limit"
            ),
            {"no": False, "type": after[0], "id": after[1], "limit": BATCH},
        ).all()
        if not found:
            break
        rows = []
        for resource_type, resource_id, content in found:
            for row in report_rows(resource_type, orjson.loads(content or "{}")):
                rows.append({**row, "resource_type": resource_type, "resource_id": resource_id, "element": None})
        if rows:
            bind.execute(table.insert(), rows)
        after = (found[-1][0], found[-1][1])


def downgrade() -> None:
    op.drop_table("supervised_organizations")
    op.drop_table("idx_report")

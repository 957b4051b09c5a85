"""The clinical series index (store/tables.py ``idx_series``, scoring/series_index.py): scoring's reads of a
client's earlier results and active Flags, one index range each however long the client's history.

Filled here from the stored Observations and Flags, in batches, so history-aware rules see every earlier session
from the first submission after the upgrade (an empty index would make every client's next session look like an
intake).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    from fhir_server.scoring.series_index import series_rows

    op.create_table(
        "idx_series",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(80), nullable=False),
        sa.Column("element", sa.Integer, nullable=True),
        sa.Column("subject_type", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("system", sa.String(256), nullable=False),
        sa.Column("code", sa.String(256), nullable=False),
        sa.Column("series", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_idx_series_resource", "idx_series", ["resource_id", "resource_type"])
    op.create_index(
        "ix_idx_series_value",
        "idx_series",
        ["resource_type", "param", "subject_id", "subject_type", "code", "series", "at"],
    )
    table = sa.table(
        "idx_series",
        *(sa.column(name) for name in ("resource_type", "resource_id", "param", "element", "subject_type")),
        *(sa.column(name) for name in ("subject_id", "system", "code", "series")),
        sa.column("at", sa.DateTime),  # typed: SQLite then stores it as the server's writes do (migration 0021)
    )
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
            for row in series_rows(resource_type, orjson.loads(content or "{}")):
                rows.append({**row, "resource_type": resource_type, "resource_id": resource_id, "element": None})
        if rows:
            bind.execute(table.insert(), rows)
        after = (found[-1][0], found[-1][1])


def downgrade() -> None:
    op.drop_table("idx_series")

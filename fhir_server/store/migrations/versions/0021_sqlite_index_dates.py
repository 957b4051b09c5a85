"""On SQLite, the dates the upgrades 0013, 0017 and 0019 wrote into the series, report and combination indexes in
the server's own text form (``2026-02-01 10:00:00.000000``).  They inserted through untyped tables, so SQLite's
driver wrote a whole second as ``2026-02-01 10:00:00``; SQLite compares dates as text, so such a row sorted before
an equal time the server wrote and was never equal to it (a keyset page, the scoring read's ``before``).  Those
upgrades now type their dates; this mends the rows they wrote before.  PostgreSQL stores timestamps as such:
nothing to do there.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

DATES = {"idx_series": ("at",), "idx_report": ("at", "acknowledged_at"), "idx_combo": ("sort_at",)}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in DATES.items():
        for column in columns:  # 19 characters: a whole second without the fraction the server writes
            op.execute(f"UPDATE {table} SET {column} = {column} || '.000000' WHERE length({column}) = 19")


def downgrade() -> None:
    pass  # the mended text is what the server writes: nothing to undo

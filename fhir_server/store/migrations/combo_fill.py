"""Fill a combination index (search/combos.py) for the resources stored before it existed, in batches: the upgrade
that adds a combination runs this, so a search answered from it finds every earlier resource."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

BATCH = 1000
# Typed as the table is (store/tables.py), so that each database stores the dates as the server's own writes do:
# SQLite's driver would otherwise write "2025-01-02 00:00:00", which is not equal, as text, to the
# "2025-01-02 00:00:00.000000" the server writes and compares with.
TABLE = sa.table(
    "idx_combo",
    *(sa.column(name, sa.String) for name in ("resource_type", "resource_id", "param", "ref_type", "ref_id")),
    *(sa.column(name, sa.String) for name in ("token_mode", "system", "code")),
    sa.column("element", sa.Integer),
    sa.column("sort_at", sa.DateTime),
)


def fill(bind: Any, name: str) -> None:
    """The rows of the combination called ``name`` for every current resource of its type."""
    from fhir_server.search.combos import COMBOS, rows_of

    combo = next(combo for combo in COMBOS if combo.name == name)
    after = ""
    while True:
        found = bind.execute(
            sa.text(
                "SELECT id, content FROM resources WHERE resource_type = :type AND deleted = :no AND id > :id"
                " ORDER BY id LIMIT :limit"
            ),
            {"type": combo.resource_type, "no": False, "id": after, "limit": BATCH},
        ).all()
        if not found:
            return
        rows = [
            {**row, "resource_type": combo.resource_type, "resource_id": resource_id}
            for resource_id, content in found
            for row in rows_of(combo, orjson.loads(content or "{}"))
        ]
        if rows:
            bind.execute(TABLE.insert(), rows)
        after = found[-1][0]

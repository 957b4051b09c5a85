"""Rebuild the search index of stored resources (after SearchParameter resources were added or changed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_
from sqlalchemy.engine import Engine

from fhir_server import fhirjson
from fhir_server.store.repository import Indexer
from fhir_server.store.sqlite_writer import SqliteWriter
from fhir_server.store.tables import INDEX_TABLES, resources


def reindex(
    engine: Engine,
    indexer: Indexer,
    *,
    resource_type: str | None = None,
    batch_size: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Re-index every current resource (of one type, or all), a batch per transaction.  Returns the count."""
    writer: Any = SqliteWriter(engine.url.database) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    r = resources.c
    live = [r.deleted.is_(False)] + ([r.resource_type == resource_type] if resource_type else [])
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(resources).where(*live)).scalar_one()
    done, after = 0, None
    while True:
        page = [*live]
        if after is not None:
            page.append(_after(after))
        # A writer like any other: SQLite writers queue (sqlite_writer.py) and start with BEGIN IMMEDIATE, so a
        # batch never reads a snapshot that a concurrent commit makes it unable to write ("database is locked").
        with writer, engine.connect().execution_options(fhir_write=True) as conn, conn.begin():
            rows = conn.execute(
                select(r.resource_type, r.id, r.content).where(*page).order_by(r.resource_type, r.id).limit(batch_size)
            ).all()
            if not rows:
                break
            _replace(conn, indexer, rows)
        after = (rows[-1].resource_type, rows[-1].id)
        done += len(rows)
        if on_progress:
            on_progress(done, total)
    return done


def _after(key: tuple[str, str]) -> Any:
    r = resources.c
    return or_(r.resource_type > key[0], and_(r.resource_type == key[0], r.id > key[1]))


def _replace(conn: Any, indexer: Indexer, rows: list[Any]) -> None:
    keys = [(row.resource_type, row.id) for row in rows]
    pending: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        resource = fhirjson.loads_stored(row.content)
        for kind, index_rows in indexer.index_rows(row.resource_type, resource).items():
            identity = {"resource_type": row.resource_type, "resource_id": row.id}
            pending.setdefault(kind, []).extend({**identity, **index_row} for index_row in index_rows)
    for kind, table in INDEX_TABLES.items():
        conn.execute(delete(table).where(tuple_(table.c.resource_type, table.c.resource_id).in_(keys)))
        if pending.get(kind):
            conn.execute(insert(table), pending[kind])

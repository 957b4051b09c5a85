"""Keyset paging (``WHERE (sort keys, id) > last row's``), shared by the general search's page and a combination
index's page (store/search_sql.py, store/search_combo.py): the same keys, the same order, so a cursor from one
is valid for the other."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.store.search_shapes import Binder, Keyset


def after(columns: list[Any], descending: list[bool], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order given (lexicographic, each key in its own direction)."""
    alternatives = []
    for i, column in enumerate(columns):
        equal_prefix = [columns[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending[i] else column > values[i]
        alternatives.append(and_(*equal_prefix, beyond))
    return or_(*alternatives)


def in_key_order(
    statement: Select[Any], keys: list[Any], descending: list[bool], keyset: Keyset | None, b: Binder, limit: int
) -> Select[Any]:
    """The statement's first ``limit`` rows after the cursor's keys in the keys' order; for a cursor going back,
    the rows before it, nearest first (the caller reverses them)."""
    flip = keyset is not None and keyset.direction == "prev"
    if keyset is not None:
        values = [b(keyset.values, i) for i in range(len(keyset.values))]
        statement = statement.where(after(keys, [d != flip for d in descending], values))
    order = [(key.asc() if d == flip else key.desc()) for key, d in zip(keys, descending, strict=True)]
    return statement.order_by(*order).limit(limit)

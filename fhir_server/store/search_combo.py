"""The page of a search a combination index answers (search/combos.py): one range of ``ix_idx_combo_value`` in the
general search's order (the date descending, then the id), joined to the current rows for their content.

On PostgreSQL it runs straight on the driver as a prepared statement, its text literals in its text: its plan is
the index range whatever the values, so unlike the general search's statements (planned for their values: a
patient's rows among a million, store/engine.py) it is parsed and planned once per connection, not per search.
Measured at 500,000 Observations: planning cost PostgreSQL as much as running it (0.23 ms each), and SQLAlchemy's
execution and result handling a third of the search's Python.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, literal, select
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.search.combos import THIS_SYSTEM, ComboMatch
from fhir_server.search.query import SearchQuery
from fhir_server.store.search_clauses import clause_sql
from fhir_server.store.search_shapes import PLANS_KEPT, Binder, Keyset
from fhir_server.store.tables import idx_combo, resources

_c, _r = idx_combo.c, resources.c


def combo_page(query: SearchQuery, found: ComboMatch, keyset: Keyset | None, b: Binder,
               after: Any) -> Any:  # fmt: skip
    """The page statement; ``after`` is search_sql's keyset condition builder (columns, descending, values)."""
    conditions: list[ColumnElement[bool]] = [
        _c.resource_type == query.resource_type,
        _c.param == found.combo.name,
        _c.ref_id == b(found.reference, "target_id"),
        _c.code == b(found.token, "code"),
        _c.ref_type == (found.implied_type or b(found.reference, "target_type")),
        _c.token_mode == found.mode,  # the mode and an absent system are the query's shape, not its values
        _c.system == (b(found.token, "system") if found.mode == THIS_SYSTEM else ""),
        _r.deleted.is_(False),
    ]
    if found.implied_type and found.reference.target_type is not None:
        # patient:Group=x: the parameter holds Patients only, so a type named in the query must be that type (a
        # value, so compared here: a Group subject's rows are keyed Group and would otherwise match)
        conditions.append(b(found.reference, "target_type") == literal(found.implied_type))
    conditions += [clause_sql(query.resource_type, clause, b) for clause in found.extras]
    key_columns = [_c.sort_at, _c.resource_id]
    descending = [True, False]
    flip = keyset is not None and keyset.direction == "prev"
    if keyset is not None:
        values = [b(keyset.values, i) for i in range(len(keyset.values))]
        conditions.append(after(key_columns, [d != flip for d in descending], values))
    order = [(col.asc() if d == flip else col.desc()) for col, d in zip(key_columns, descending, strict=True)]
    joined = idx_combo.join(resources, and_(_r.resource_type == _c.resource_type, _r.id == _c.resource_id))
    columns = (_r.resource_type, _r.id, _r.version_id, _r.last_updated, _r.deleted, _r.content)
    return (
        select(*columns, _c.sort_at.label("k0"))
        .select_from(joined)
        .where(*conditions)
        .order_by(*order)
        .limit(query.count + 1)
        .execution_options(**{PREPARED: True})
    )


PREPARED = "fhir_prepared"  # the execution option that marks a page statement to run prepared on PostgreSQL


class PreparedPage:
    """A page statement compiled once for psycopg, its text literals inlined (the planner knows them, and only
    the query's values are parameters)."""

    _made: OrderedDict[Any, PreparedPage] = OrderedDict()  # by statement (kept ones: search_shapes.PLANS)
    _lock = threading.Lock()

    @classmethod
    def of(cls, statement: Any, values: Iterable[str]) -> PreparedPage | None:
        """The statement's prepared form if it is marked for one (made on first use), else None."""
        if not statement.get_execution_options().get(PREPARED):
            return None
        with cls._lock:
            made = cls._made.get(statement)
            if made is not None:
                cls._made.move_to_end(statement)
                return made
        made = cls(statement, set(values))
        with cls._lock:
            cls._made[statement] = made
            while len(cls._made) > PLANS_KEPT:
                cls._made.popitem(last=False)
        return made

    def __init__(self, statement: Any, values: set[str]) -> None:
        """``values``: the names of the parameters that hold the query's values (search_shapes.Binder)."""
        # An IN list of the shape (a compartment's parameter codes) rendered out: its length is the shape's too.
        compiled = statement.compile(dialect=_PG, compile_kwargs={"render_postcompile": True})
        sql, defaults = str(compiled), dict(compiled.params)
        for name, value in list(defaults.items()):
            if isinstance(value, str) and name not in values:  # a literal of the shape, not a value
                # quoted for SQL, and a % doubled for psycopg (a LIKE pattern of the compartment clause)
                sql = sql.replace(f"%({name})s", "'" + value.replace("'", "''").replace("%", "%%") + "'")
                del defaults[name]
        self.sql, self.defaults = sql, defaults

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(self.sql, {**self.defaults, **params}, prepare=True)
            return cursor.fetchall()


_PG = pg_dialect.dialect()

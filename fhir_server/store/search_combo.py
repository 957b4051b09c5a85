"""The page of a search a combination index answers (search/combos.py): one range of ``ix_idx_combo_value`` in the
general search's order (the date descending then the id, or the id alone), joined to the current rows for their
content.

On PostgreSQL it runs straight on the driver as a prepared statement, its text literals in its text: its plan is
the index range whatever the values, so unlike the general search's statements (planned for their values: a
patient's rows among a million, store/engine.py) it is parsed and planned once per connection, not per search.
Measured at 500,000 Observations: planning cost PostgreSQL as much as running it (0.23 ms each), and SQLAlchemy's
execution and result handling a third of the search's Python.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, and_, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from fhir_server.search.combos import THIS_SYSTEM, ComboMatch
from fhir_server.search.fhirdate import MIN_DATE
from fhir_server.search.query import SearchQuery
from fhir_server.store.fixed import psycopg_text
from fhir_server.store.search_clauses import clause_sql
from fhir_server.store.search_keyset import in_key_order
from fhir_server.store.search_shapes import Binder, Keyset, Plan
from fhir_server.store.tables import idx_combo, resources

_c, _r = idx_combo.c, resources.c


def combo_page(query: SearchQuery, found: ComboMatch, keyset: Keyset | None, b: Binder) -> Any:
    """The page statement: the combination's rows of one reference and one code, in the general search's order."""
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
    joined = idx_combo.join(resources, and_(_r.resource_type == _c.resource_type, _r.id == _c.resource_id))
    columns = [_r.resource_type, _r.id, _r.version_id, _r.last_updated, _r.deleted, _r.content]
    if found.combo.sort is None:  # the id order: every row's sort_at is MIN_DATE, so the range is in id order
        conditions.append(_c.sort_at == literal(MIN_DATE, DateTime))
        keys, descending = [_c.resource_id], [False]
    else:
        columns.append(_c.sort_at.label("k0"))
        keys, descending = [_c.sort_at, _c.resource_id], [True, False]
    statement = select(*columns).select_from(joined).where(*conditions)
    paged = in_key_order(statement, keys, descending, keyset, b, query.count + 1)
    return paged.execution_options(**{PREPARED: True})


PREPARED = "fhir_prepared"  # the execution option that marks a page statement to run prepared on PostgreSQL


class PreparedPage:
    """A page statement compiled once for psycopg, its text literals inlined (the planner knows them, and only
    the query's values are parameters).  Made on first use and kept in the search's kept plan."""

    @staticmethod
    def of(plan: Plan) -> PreparedPage | None:
        """The plan's page in its prepared form if it is marked for one, else None."""
        page = plan.statements["page"]
        if not page.get_execution_options().get(PREPARED):
            return None
        made = plan.made.get("prepared page")
        if made is None:  # two threads may both make it: the same text, and either is kept
            made = plan.made["prepared page"] = PreparedPage(page, set(plan.derived))
        return made

    def __init__(self, statement: Any, values: set[str]) -> None:
        """``values``: the names of the parameters that hold the query's values (search_shapes.Binder).  An IN
        list of the shape (a compartment's parameter codes) is rendered out: its length is the shape's too."""
        self.sql, self.defaults = psycopg_text(statement, inline=True, values=values, expand=True)

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(self.sql, {**self.defaults, **params}, prepare=True)
            return cursor.fetchall()

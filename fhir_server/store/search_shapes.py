"""Searches planned once per shape: the statements of a search are built (SQLAlchemy) the first time a query of its
*shape* arrives and kept; later queries of that shape only bind their own values to the kept statements.

The shape is everything that decides the SQL's text: the type, each clause's kind, parameter, modifiers and
prefixes, how many values each has and which of them are empty or absent, the sort, the page size, the total mode
and whether a paging cursor goes forwards or backwards.  Never a value: the values of a query are collected by the
same walk, in the same order, and every value the SQL uses reaches it through a ``Binder`` as a named bound
parameter (``v<n>``, or ``v<n>_<transform>`` for a value the SQL needs derived, such as a LIKE prefix).  A
constant that is not a value (a sentinel, a parameter's code) is part of the shape, so the kept statement may
carry it.  Building a search's statements cost more Python than running them (about a third of a simple search's
server time); the walk costs a few microseconds.

PostgreSQL prepares a statement it sees often (psycopg's prepare threshold) and, as the read pools are
configured (store/engine.py), plans it for each execution's values: a patient's search is planned for that
patient, never for "any patient".
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from fhir_server.search import conditions as c
from fhir_server.search.query import CompartmentClause, SearchQuery
from fhir_server.search.registry import SearchParam

# The fields of each node that hold a searched value; every other field is shape.
VALUE_FIELDS: dict[type, frozenset[str]] = {
    c.TokenMatch: frozenset({"system", "code", "text"}),
    c.StringMatch: frozenset({"value"}),
    c.DateMatch: frozenset({"low", "high"}),
    c.NumberMatch: frozenset({"value", "low", "high", "system", "code"}),
    c.ReferenceMatch: frozenset({"target_type", "target_id", "url", "version"}),
    c.UriMatch: frozenset({"value", "version"}),
    CompartmentClause: frozenset({"owner_id"}),
}
_FIELDS: dict[type, tuple[str, ...]] = {}
PLANS_KEPT = 512  # shapes; a server sees a few dozen


@dataclasses.dataclass(frozen=True)
class Keyset:
    """A paging cursor's sort-key values (their number and types are shape, the values are values)."""

    values: tuple[Any, ...]
    direction: str  # "next" or "prev"


Slots = dict[tuple[int, Any], int]


class Binder:
    """Hands the statement builder a named bound parameter for each value, remembering which value of the shape
    walk it is and how it was derived, so a kept statement can take another query's values."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._params: dict[str, BindParameter[Any]] = {}
        self.derived: dict[str, tuple[int, Callable[[Any], Any] | None]] = {}

    def __call__(
        self,
        owner: Any,
        field: str | int,
        transform: Callable[[Any], Any] | None = None,
        type_: TypeEngine[Any] | None = None,
    ) -> BindParameter[Any]:
        index = self._slots[(id(owner), field)]
        name = f"v{index}" if transform is None else f"v{index}_{transform.__name__}"
        if name not in self._params:
            raw = owner[field] if isinstance(field, int) else getattr(owner, field)
            value = raw if transform is None else transform(raw)
            self._params[name] = bindparam(name, value, type_=type_)
            self.derived[name] = (index, transform)
        return self._params[name]


def values_for(derived: dict[str, tuple[int, Callable[[Any], Any] | None]], values: list[Any]) -> dict[str, Any]:
    return {name: values[i] if f is None else f(values[i]) for name, (i, f) in derived.items()}


# -- the walk -------------------------------------------------------------------------------------------------
def walk(query: SearchQuery, keyset: Keyset | None, slots: Slots | None = None) -> tuple[tuple[Any, ...], list[Any]]:
    """(shape, values) of a query's statements; ``slots`` (when given) learns where each value sits."""
    shape: list[Any] = [query.resource_type, query.count, query.total, query.summary]
    values: list[Any] = []
    _node(query.clauses, shape, values, slots, {})
    for key in query.sort:
        shape += [key.param.code, key.param.type, key.param.row_params, key.param.expression, key.descending]
    if keyset is None:
        shape.append(None)
    else:
        shape += [keyset.direction, tuple(type(v).__name__ for v in keyset.values)]
        for number, value in enumerate(keyset.values):
            if slots is not None:
                slots[(id(keyset.values), number)] = len(values)
            values.append(value)
    return tuple(shape), values


def _node(node: Any, shape: list[Any], values: list[Any], slots: Slots | None, seen: dict[int, int]) -> None:
    if isinstance(node, SearchParam):
        # its expression too: whether a combination index answers depends on it (search/combos.py)
        shape.append((node.code, node.type, node.row_params, node.expression))
    elif isinstance(node, list | tuple):
        shape.append(len(node))
        for item in node:
            _node(item, shape, values, slots, seen)
    elif dataclasses.is_dataclass(node):
        kind = type(node)
        held = VALUE_FIELDS.get(kind, frozenset())
        if held:
            # One value-holding object met twice (a clause placed in two spots) binds one value in both: the shape
            # says so, or a query of the same text with two distinct objects would reuse a plan binding one.
            if id(node) in seen:
                shape.append(("same as", seen[id(node)]))
                return
            seen[id(node)] = len(values)
        shape.append(kind.__name__)
        names = _FIELDS.get(kind) or _FIELDS.setdefault(kind, tuple(f.name for f in dataclasses.fields(node)))
        for name in names:
            value = getattr(node, name)
            if name in held:
                if slots is not None:
                    slots[(id(node), name)] = len(values)
                values.append(value)
                # absent, empty or present (and its type) decide the SQL; what it is does not
                shape.append(None if value is None else "" if value == "" else _kind(value))
            else:
                _node(value, shape, values, slots, seen)
    else:  # a str, int, bool or None that is shape: a prefix, a mode, a type, a flag
        shape.append(node)


def _kind(value: Any) -> str:
    return "datetime" if isinstance(value, datetime) else type(value).__name__


# -- the kept plans ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    statements: dict[str, Any]  # "count" and/or "page": SQLAlchemy statements with named bound parameters
    derived: dict[str, tuple[int, Callable[[Any], Any] | None]]
    # Forms made from the statements on first use, kept as long as the plan (a page's prepared text on PostgreSQL:
    # store/search_combo.py)
    made: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


class Plans:
    """Kept statements by (dialect, shape), least recently used dropped first; shared by a process's threads."""

    def __init__(self, size: int = PLANS_KEPT) -> None:
        self._kept: OrderedDict[tuple[Any, ...], Plan] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self.hits = self.misses = 0

    def plan(
        self,
        dialect: str,
        query: SearchQuery,
        keyset: Keyset | None,
        build: Callable[[Binder], dict[str, Any]],
    ) -> tuple[Plan, dict[str, Any]]:
        """The kept plan for the query's shape (built with ``build`` on first sight) and this query's values."""
        shape, values = walk(query, keyset)
        key = (dialect, shape)
        with self._lock:
            plan = self._kept.get(key)
            if plan is not None:
                self._kept.move_to_end(key)
                self.hits += 1
        if plan is None:
            slots: Slots = {}
            walk(query, keyset, slots)
            binder = Binder(slots)
            plan = Plan(build(binder), dict(binder.derived))
            with self._lock:
                self.misses += 1
                self._kept[key] = plan
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
        return plan, values_for(plan.derived, values)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


PLANS = Plans()

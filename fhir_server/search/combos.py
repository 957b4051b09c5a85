"""Combination indexes: one index row per (reference, code) pair of a resource, ordered by its date, so that the
product's hottest searches are one range of one index read in order for a page:

- a client's results of one measure newest first (``Observation?subject=Patient/x&code=s|c&_sort=-date``: the
  clinician view, a CDS prefetch), instead of every Observation of the client probed for its code and its date
  (issue 23: ~100 look-ups and ~2,000 index rows per page at 100 Observations a client, however small the page);
- a client's active Flags (``Flag?patient=x&status=active``: the clinician view, every CDS hook), in the general
  search's default order (by id), run as one prepared statement instead of two probes planned per request.

Like HAPI FHIR's combo search parameters, a combination matches only the exact equality the query states; any other
query of the type (another parameter, a modifier, an id without a type, several values) takes the general
search.  The rows are made from the resource's own search-index rows (``SearchIndexer.index_rows``), so a
combination can never disagree with the parameters it combines: tests/search/test_combo_index.py runs the same
searches both ways.

A token's three query forms are three row modes, so that each form is one index range and a resource is met once:
``s|c`` (``=``, that system), ``|c`` (``-``, no system) and ``c`` (``*``, any system, every coding of that code
in one row).  The sort key is the one the general search computes: the latest end of the resource's date values
(``_sort=-date``), and ``MIN_DATE`` (last) when it has none; a combination without a sort keeps ``MIN_DATE`` in
every row, so its range is in id order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhir_server.search.conditions import ReferenceMatch, TokenMatch
from fhir_server.search.fhirdate import MIN_DATE
from fhir_server.search.query import Clause, SearchQuery
from fhir_server.search.registry import Registry, SearchParam, spec_parameters
from fhir_server.search.types import MODULES

ANY_SYSTEM, NO_SYSTEM, THIS_SYSTEM = "*", "-", "="


@dataclass(frozen=True)
class Combo:
    name: str  # the rows' ``param``
    resource_type: str
    references: tuple[str, ...]  # reference parameters whose typed values (Type/id) key the rows
    token: str  # the token parameter whose codes key the rows
    sort: str | None  # the date parameter the rows are ordered by, newest first; None: by id (no _sort)

    @property
    def codes(self) -> tuple[str, ...]:
        return (*self.references, self.token, *((self.sort,) if self.sort else ()))

    def designed(self, registry: Registry) -> bool:
        """Whether the registry's parameters of these codes have the definitions the combination was made for
        (an operator's SearchParameter of the same code takes their place: custom.py)."""
        return all(_designed(registry.get(self.resource_type, code)) for code in self.codes)

    def rows(self, index: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """This combination's rows for a resource, from its search-index rows (table kind → rows)."""
        targets = {
            (row["target_type"], row["target_id"])
            for row in index.get("reference", ())
            if row["param"] in self.references and row["target_type"] and row["target_id"]
        }
        if not targets:
            return []
        codes = set()
        for row in index.get("token", ()):
            if row["param"] == self.token and row["code"] is not None:
                system = row["system"]
                codes.add((ANY_SYSTEM, "", row["code"]))
                codes.add((NO_SYSTEM, "", row["code"]) if system is None else (THIS_SYSTEM, system, row["code"]))
        if not codes:
            return []
        ends = [row["high"] for row in index.get("date", ()) if row["param"] == self.sort and row["high"]]
        at = max(ends) if ends else MIN_DATE  # none without a sort: its param matches no row
        return [_row(self.name, ref, code, at) for ref in sorted(targets) for code in sorted(codes)]


def _row(name: str, ref: tuple[str, str], code: tuple[str, str, str], at: datetime) -> dict[str, Any]:
    return {
        "param": name, "element": None, "ref_type": ref[0], "ref_id": ref[1], "token_mode": code[0],
        "system": code[1], "code": code[2], "sort_at": at,
    }  # fmt: skip


# The product's searches (docs/architecture.md, "Search"): a client's scored results of a measure, newest first,
# and a client's Flags by status.  ``patient`` is ``subject`` where it is a Patient, so a Patient subject keys both.
COMBOS: tuple[Combo, ...] = (
    Combo("subject+code:-date", "Observation", ("subject", "patient"), "code", "date"),
    Combo("subject+status", "Flag", ("subject", "patient"), "status", None),
)

# Definitions the combinations are made for that R4 does not have: the product's own SearchParameter for Flag
# status (terminology/searchparameter-flag-status.json, which the library stores at start-up; a test holds them
# equal).
PRODUCT_PARAMETERS = (
    SearchParam("status", "Flag", "token", "Flag.status", url="http://fit-fhir.org/fhir/SearchParameter/Flag-status"),
)


def combos_for(resource_type: str) -> list[Combo]:
    return [combo for combo in COMBOS if combo.resource_type == resource_type]


@cache
def _spec() -> dict[tuple[str, str], SearchParam]:
    return {(param.base, param.code): param for param in (*spec_parameters(), *PRODUCT_PARAMETERS)}


def _designed(param: SearchParam | None) -> bool:
    """A parameter with R4's definition (or the product's: ``PRODUCT_PARAMETERS``), whose rows the combination's
    rows are made from.  A SearchParameter that redefines one (``subject`` as ``Observation.performer``) indexes
    other rows under its code: a query naming it takes the general search, and the combination keeps its rows from
    the definitions it was made for (``rows_of``).  The expression is part of a query's shape
    (store/search_shapes.py), so a kept plan follows the same decision."""
    if param is None:
        return False
    spec = _spec().get((param.base, param.code))
    return spec is not None and spec.type == param.type and spec.expression == param.expression


@dataclass(frozen=True)
class ComboMatch:
    """A query a combination answers: which combination, and the clauses holding its reference and its code."""

    combo: Combo
    reference: ReferenceMatch
    token: TokenMatch
    # The one type the reference parameter holds (patient: Patient), or None.  A type the query names is a value,
    # compared with it in SQL (patient:Group=x matches nothing), never here: the statement is kept per shape.
    implied_type: str | None = None
    extras: tuple[Any, ...] = ()  # the query's other clauses, applied to the rows as the general search does

    @property
    def mode(self) -> str:
        if self.token.system is None:
            return ANY_SYSTEM
        return NO_SYSTEM if self.token.system == "" else THIS_SYSTEM


def match(query: SearchQuery) -> ComboMatch | None:
    """The combination that answers this query's page, or None.  Only its shape decides (the statement is kept per
    shape, store/search_shapes.py): a plain clause with one typed reference and one with one code, sorted as the
    combination is (its date newest first, or not at all).  Any other clauses (``status=final``, the compartment a
    patient token adds) filter the rows of that one client and code as the general search would: the range they
    walk is that small."""
    for combo in combos_for(query.resource_type):
        if not _sorted_as(query, combo):
            continue
        found = _pair(query.clauses, combo)
        if found is not None:
            return found
    return None


def _sorted_as(query: SearchQuery, combo: Combo) -> bool:
    """The query's sort is the combination's: its date newest first, or none (the id order) for one without."""
    if combo.sort is None:
        return not query.sort
    if len(query.sort) != 1 or not query.sort[0].descending:
        return False
    sort = query.sort[0].param
    return sort.code == combo.sort and sort.row_params == (combo.sort,) and _designed(sort)


def _pair(clauses: Iterable[Any], combo: Combo) -> ComboMatch | None:
    reference = token = implied = None
    extras = []
    for clause in clauses:
        condition = _single(clause)
        code = clause.param.code if condition is not None else None
        if reference is None and code in combo.references and _typed(clause, condition):
            reference, implied = condition, _implied_type(clause)
        elif token is None and code == combo.token and _a_code(condition):
            token = condition
        else:
            extras.append(clause)
    if reference is None or token is None:
        return None
    return ComboMatch(combo, reference, token, implied, tuple(extras))


def _single(clause: Any) -> Any:
    if not isinstance(clause, Clause) or clause.negate or len(clause.conditions) != 1:
        return None
    if clause.param.row_params != (clause.param.code,):  # a union parameter searches other parameters' rows
        return None
    if not _designed(clause.param):
        return None
    return clause.conditions[0]


def _a_code(condition: Any) -> bool:
    """One code, in a system, without one or in any (not ``s|``, which is every code of a system; not :text)."""
    return isinstance(condition, TokenMatch) and bool(condition.code) and condition.text is None


def _typed(clause: Clause, condition: Any) -> bool:
    """A relative reference with its type (``Patient/x``, or ``patient=x``, typed by its parameter): an id alone
    may name any type, an absolute URL is matched as a URL."""
    if not isinstance(condition, ReferenceMatch) or not condition.target_id or condition.url is not None:
        return False
    return bool(condition.target_type or _implied_type(clause))


def _implied_type(clause: Clause) -> str | None:
    """The one type a parameter's references can have, from its expression (``subject.where(resolve() is
    Patient)``): every index row it makes is of that type, so an id alone means that type's."""
    return getattr(clause.param.evaluator, "reference_type", None)


def rows_of(combo: Combo, resource: dict[str, Any]) -> list[dict[str, Any]]:
    """A resource's rows of a combination, from the definitions of the parameters it combines, evaluated on their
    own: for the resources stored before the index existed (migration 0019), and while an operator's
    SearchParameter redefines one of them (search/indexer.py)."""
    index: dict[str, list[dict[str, Any]]] = {}
    for code in combo.codes:
        param = _spec().get((combo.resource_type, code))
        if param is None or param.evaluator is None:
            continue
        for row in MODULES[param.type].index(param.evaluator(resource)):
            index.setdefault(param.type, []).append({**row, "param": code})
    return combo.rows(index)

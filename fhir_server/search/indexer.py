"""Index rows for one resource: every registered parameter's values, typed by its parameter-type module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.reporting.facts import report_rows
from fhir_server.scoring.series_index import series_rows
from fhir_server.search.combos import combos_for, rows_of
from fhir_server.search.paths import compile_component
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.types import MODULES, token


def _add(rows: dict[str, list[dict[str, Any]]], table: str, param: str, new_rows: list[dict[str, Any]]) -> None:
    if not new_rows:  # most modifier rows (:identifier, :of-type) are none
        return
    if len(new_rows) == 1:  # nothing to repeat
        row = new_rows[0]
        row["param"] = param
        row["element"] = None
        rows.setdefault(table, []).append(row)
        return
    seen = set()
    for row in new_rows:
        key = tuple(row.values())
        if key in seen:
            continue
        seen.add(key)
        row["param"] = param
        row["element"] = None
        rows.setdefault(table, []).append(row)


def _identifier_types(values: list[Any]) -> list[dict[str, Any]]:
    """``identifier:of-type=typeSystem|typeCode|value``: one row per (type coding, value)."""
    out = []
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("type"), dict) and isinstance(value.get("value"), str):
            for coding in value["type"].get("coding", ()):
                if isinstance(coding, dict) and coding.get("code"):
                    system = f"{coding.get('system', '')}|{coding['code']}"
                    out.append({"system": system[:256], "code": value["value"][:256], "text": None})
    return out


# Types with rows in the clinical series index (scoring reads them on every submission).
SERIES_TYPES = ("Observation", "Flag")


@dataclass(frozen=True)
class _Step:
    """One indexed parameter, ready to run: its evaluator and type module looked up, its modifier rows named."""

    code: str
    kind: str  # the parameter's type
    table: str
    evaluate: Callable[[dict[str, Any]], list[Any]]
    index: Callable[[list[Any]], list[dict[str, Any]]]
    extra: str  # the code of the :identifier (reference) or :of-type (token) rows
    composite: SearchParam | None = None

    @classmethod
    def of(cls, param: SearchParam) -> _Step:
        if param.type == "composite":
            return cls(param.code, param.type, "", _nothing, _nothing, "", composite=param)
        module = MODULES[param.type]
        extra = {"reference": f"{param.code}:identifier", "token": f"{param.code}:of-type"}.get(param.type, "")
        assert param.evaluator is not None  # indexed parameters have an expression
        return cls(param.code, param.type, module.TABLE, param.evaluator, module.index, extra)


def _nothing(_: Any) -> list[Any]:
    return []


class SearchIndexer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._plans: dict[str, tuple[list[SearchParam], tuple[_Step, ...]]] = {}

    def tables_for(self, resource_type: str) -> set[str]:
        """Index tables this type's parameters can write to (token too: :identifier and :of-type rows)."""
        kinds = {"token"}
        if resource_type in SERIES_TYPES:
            kinds.update(("series", "report"))
        if combos_for(resource_type):
            kinds.add("combo")
        for param in self.registry.indexed_for(resource_type):
            if param.type == "composite":
                kinds.update(component.type for component, _ in self.registry.components(param))
            else:
                kinds.add(MODULES[param.type].TABLE)
        return kinds

    def index_rows(self, resource_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {}
        for step in self._plan(resource_type):
            if step.composite is not None:
                self._composite(step.composite, resource, rows)
                continue
            values = step.evaluate(resource)
            if not values:
                continue
            _add(rows, step.table, step.code, step.index(values))
            if step.kind == "reference":  # Reference.identifier, for the :identifier modifier
                identifiers = [v["identifier"] for v in values if isinstance(v, dict) and "identifier" in v]
                if identifiers:
                    _add(rows, "token", step.extra, token.index(identifiers))
            elif step.kind == "token":  # Identifier.type, for the :of-type modifier
                _add(rows, "token", step.extra, _identifier_types(values))
        for combo in combos_for(resource_type):  # the combination index, made from the rows above (or R4's)
            if found := combo.rows(rows) if combo.designed(self.registry) else rows_of(combo, resource):
                rows.setdefault("combo", []).extend(found)
        if resource_type in SERIES_TYPES:  # the clinical series index, replaced with the search rows
            for row in series_rows(resource_type, resource):
                rows.setdefault("series", []).append({**row, "element": None})
            for row in report_rows(resource_type, resource):  # the reporting index, likewise
                rows.setdefault("report", []).append({**row, "element": None})
        return rows

    def _plan(self, resource_type: str) -> tuple[_Step, ...]:
        """The type's indexed parameters as steps, made once per list of them (the registry makes a new list when
        its parameters change): every write runs them, and looking up each parameter's evaluator, type module and
        modifier names per write was about 40 % of indexing a small resource (an AuditEvent: 50 µs)."""
        params = self.registry.indexed_for(resource_type)
        made = self._plans.get(resource_type)
        if made is None or made[0] is not params:
            made = (params, tuple(_Step.of(param) for param in params))
            self._plans[resource_type] = made
        return made[1]

    def _composite(self, param: SearchParam, resource: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
        components = self.registry.components(param)
        if not components:
            return
        for element, node in enumerate(param.evaluator(resource)):
            if not isinstance(node, dict):
                continue
            # A composite search names every component and matches them within one element: an element lacking
            # one (an Observation's code beside a valueQuantity, for code-value-concept) can never match, so its
            # other components' rows would only cost writes.  The last components (the values) are the ones an
            # element lacks, so they are looked at first and the element is left at the first one missing.
            parts: list[list[dict[str, Any]]] = []
            for component, expression in reversed(components):
                evaluate = compile_component(param.base, param.expression or "", expression)
                part = MODULES[component.type].index(evaluate(node, resource))
                if not part:
                    break
                parts.append(part)
            else:
                parts.reverse()
            if len(parts) < len(components):
                continue
            for number, ((component, _), part) in enumerate(zip(components, parts, strict=True)):
                table = MODULES[component.type].TABLE
                for row in part:
                    row["param"] = f"{param.code}#{number}"
                    row["element"] = element
                    rows.setdefault(table, []).append(row)

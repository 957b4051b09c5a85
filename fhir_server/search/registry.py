"""The search-parameter registry: data from the FHIR R4 specification, keyed by (resource type, code).

Behaviour per parameter *type* lives in ``fhir_server.search.types``; nothing here branches on a code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server import models
from fhir_server.search.paths import Evaluator, compile_expression

# Parameters answered from columns of the resources table instead of index tables.
COLUMN_PARAMS = {"_id": "token", "_lastUpdated": "date"}

# Parameters R4 defines as the union of two others' expressions (Observation ``combo-X`` is ``X`` |
# ``component-X``, the composites element for element): they are searched over those parameters' index rows
# instead of storing every value twice (25 of a scored Observation's 57 index rows).
UNION_PARAMETERS: dict[tuple[str, str], tuple[str, str]] = {
    ("Observation", f"combo-{name}"): (name, f"component-{name}")
    for name in (
        "code",
        "value-quantity",
        "value-concept",
        "data-absent-reason",
        "code-value-quantity",
        "code-value-concept",
    )
}

# Types whose records are written far more often than searched, indexed only for the searches their readers run.
# AuditEvent: one per access to patient data (a read, a search, a report); audit reviews ask who (agent) saw
# whose record (patient, entity), when (date), doing what (type, subtype, action), with what outcome, from where
# (source).  Its other R4 parameters would add index rows to every read for no reader; a search by one is a 400
# saying so, never a search that silently matches nothing (issue 23).
INDEXED_ONLY: dict[str, frozenset[str]] = {
    "AuditEvent": frozenset({"action", "agent", "date", "entity", "outcome", "patient", "source", "subtype", "type"}),
}
COMMON_BASES = ("Resource", "DomainResource")


@dataclass(frozen=True)
class SearchParam:
    code: str
    base: str
    type: str
    expression: str | None = None
    targets: tuple[str, ...] = ()
    url: str = ""
    components: tuple[dict[str, Any], ...] = field(default=())
    # Set for a union parameter: the parameters whose index rows it is searched over (UNION_PARAMETERS).
    sources: tuple[str, ...] = ()

    @property
    def evaluator(self) -> Evaluator | None:
        return compile_expression(self.expression) if self.expression else None

    @property
    def indexed(self) -> bool:
        # Special parameters (e.g. Location near) need code of their own and are not indexed; union parameters
        # are searched over their sources' rows.
        return (
            self.code not in COLUMN_PARAMS
            and self.expression is not None
            and self.type != "special"
            and not self.sources
        )

    @property
    def row_params(self) -> tuple[str, ...]:
        """The ``param`` values of the index rows this parameter is searched over."""
        return self.sources or (self.code,)


class Registry:
    def __init__(self, params: Iterable[SearchParam]) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._common: dict[str, SearchParam] = {}
        self._indexed_cache: dict[str, list[SearchParam]] = {}
        self._components_cache: dict[tuple[str, str], list[tuple[SearchParam, str]]] = {}
        self._by_url: dict[str, list[SearchParam]] = {}
        self.generation = 0
        self._base = list(params)
        for param in self._base:
            self.add(param)

    def set_custom(self, custom: Iterable[SearchParam]) -> None:
        """Replace the parameters defined by SearchParameter resources (spec parameters stay; a custom one with
        the same code on the same type takes precedence).  Built aside and swapped in, for concurrent readers."""
        fresh = Registry([*self._base, *custom])
        self._by_type, self._common, self._by_url = fresh._by_type, fresh._common, fresh._by_url
        self._indexed_cache, self._components_cache = {}, {}
        self.generation += 1

    def add(self, param: SearchParam) -> None:
        if param.url:
            self._by_url.setdefault(param.url, []).append(param)
        if param.base in COMMON_BASES:
            self._common[param.code] = param
        else:
            self._by_type.setdefault(param.base, {})[param.code] = param
        self._indexed_cache: dict[str, list[SearchParam]] = {}

    def declined(self, resource_type: str, code: str) -> str | None:
        """Why an R4 parameter of the type is not searched here (INDEXED_ONLY), or None."""
        kept = INDEXED_ONLY.get(resource_type)
        if kept is None or code in kept or not any(p.base == resource_type and p.code == code for p in _declined()):
            return None
        return (
            f"{resource_type} is indexed only for the searches audit reviews run ({', '.join(sorted(kept))} and "
            f"the common parameters such as _id and _lastUpdated): '{code}' is not searched on this server"
        )

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        found = self._by_type.get(resource_type, {}).get(code)
        return found or self._common.get(code)

    def by_url(self, url: str, resource_type: str) -> SearchParam | None:
        """A parameter by canonical URL (composite components name theirs), preferring the given base type."""
        found = self._by_url.get(url, [])
        return next((p for p in found if p.base == resource_type), found[0] if found else None)

    def components(self, param: SearchParam) -> list[tuple[SearchParam, str]]:
        """(component parameter, expression relative to the composite's node) for a composite parameter."""
        key = (param.base, param.code)
        if key not in self._components_cache:
            self._components_cache[key] = self._resolve_components(param)
        return self._components_cache[key]

    def _resolve_components(self, param: SearchParam) -> list[tuple[SearchParam, str]]:
        out = []
        for component in param.components:
            resolved = self.by_url(component.get("definition", ""), param.base)
            if resolved is None or resolved.type not in (
                "token",
                "string",
                "date",
                "reference",
                "quantity",
                "number",
                "uri",
            ):
                return []
            out.append((resolved, component.get("expression", "")))
        return out

    def for_type(self, resource_type: str) -> list[SearchParam]:
        merged = {**self._common, **self._by_type.get(resource_type, {})}
        return [merged[c] for c in sorted(merged)]

    def indexed_for(self, resource_type: str) -> list[SearchParam]:
        cached = self._indexed_cache.get(resource_type)
        if cached is None:
            cached = [p for p in self.for_type(resource_type) if p.indexed]
            self._indexed_cache[resource_type] = cached
        return cached


def _from_json(item: dict[str, Any]) -> SearchParam:
    return SearchParam(
        code=item["code"],
        base=item["base"],
        type=item["type"],
        expression=item.get("expression"),
        targets=tuple(item.get("target", ())),
        url=item.get("url", ""),
        components=tuple(item.get("component", ())),
        sources=UNION_PARAMETERS.get((item["base"], item["code"]), ()),
    )


_BUILT_IN = [
    SearchParam("_id", "Resource", "token", None, url="http://hl7.org/fhir/SearchParameter/Resource-id"),
    SearchParam(
        "_lastUpdated",
        "Resource",
        "date",
        None,
        url="http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    ),
]


@cache
def _r4_parameters() -> tuple[SearchParam, ...]:
    path = resources.files("fhir_server.search").joinpath("data/search_parameters.json")
    raw = orjson.loads(path.read_bytes())
    return tuple(
        _from_json(item)
        for item in raw
        if (item["base"] in COMMON_BASES or models.is_resource_type(item["base"])) and item["code"] not in COLUMN_PARAMS
    )


def _kept(param: SearchParam) -> bool:
    return param.base not in INDEXED_ONLY or param.code in INDEXED_ONLY[param.base]


@cache
def _declined() -> tuple[SearchParam, ...]:
    return tuple(p for p in _r4_parameters() if not _kept(p))


@cache
def spec_parameters() -> tuple[SearchParam, ...]:
    return (*_BUILT_IN, *(p for p in _r4_parameters() if _kept(p)))


def default_registry() -> Registry:
    return Registry(spec_parameters())

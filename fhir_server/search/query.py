"""Parse a search request (``Type?param=value&...``) into a SearchQuery the store can run.

Repeated parameters AND together, comma-separated values OR together.  Unknown parameters are reported back
(or refused with ``Prefer: handling=strict``); malformed values are always a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fhir_server.errors import FhirError
from fhir_server.search.conditions import Condition, MissingMatch
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.types import MODULES, SearchValueError
from fhir_server.search.types.common import split_unescaped

# Parameters that shape the result rather than select resources.
RESULT_PARAMS = {"_count", "_total", "_summary", "_elements", "_sort", "_format", "_pretty", "_cursor"}
MAX_OR_VALUES = 100
MAX_CLAUSES = 40


@dataclass(frozen=True)
class Clause:
    param: SearchParam
    conditions: tuple[Condition, ...]  # OR
    negate: bool = False  # :not / ne


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    total: str = "none"  # none | estimate | accurate
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    cursor: str | None = None
    ignored: list[str] = field(default_factory=list)


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    registry: Registry,
    *,
    default_count: int = 20,
    max_count: int = 1000,
    strict: bool = False,
) -> SearchQuery:
    query = SearchQuery(resource_type, count=default_count)
    for key, raw in params:
        name, _, modifier = key.partition(":")
        if name in RESULT_PARAMS:
            _result_param(query, name, raw, max_count)
            continue
        param = registry.get(resource_type, name)
        if param is None or (param.type not in MODULES and param.code != "_id"):
            if strict:
                raise FhirError(400, "not-supported", f"Unknown or unsupported search parameter '{key[:64]}'")
            query.ignored.append(key[:64])
            continue
        query.clauses.append(_clause(param, modifier or None, raw, key))
    if len(query.clauses) > MAX_CLAUSES:
        raise FhirError(400, "too-costly", f"At most {MAX_CLAUSES} search parameters may be combined")
    return query


def _clause(param: SearchParam, modifier: str | None, raw: str, key: str) -> Clause:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise FhirError(400, "value", f"'{key}' must be true or false", expression=[key])
        return Clause(param, (MissingMatch(raw == "true"),))
    values = split_unescaped(raw, ",")
    if len(values) > MAX_OR_VALUES:
        raise FhirError(400, "too-costly", f"'{key}' has more than {MAX_OR_VALUES} alternative values")
    negate = modifier == "not"
    module = MODULES[param.type]
    conditions = []
    for value in values:
        try:
            if param.type == "reference":
                conditions.append(module.parse(value, modifier, param.targets))
            else:
                conditions.append(module.parse(value, None if negate else modifier))
        except SearchValueError as exc:
            raise FhirError(400, "value", f"Invalid value for search parameter '{key}': {exc}") from None
    return Clause(param, tuple(conditions), negate)


def _result_param(query: SearchQuery, name: str, raw: str, max_count: int) -> None:
    if name == "_count":
        if not raw.isdigit():
            raise FhirError(400, "value", f"_count must be a non-negative integer, not '{raw[:20]}'")
        query.count = min(int(raw), max_count)
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise FhirError(400, "value", "_total must be none, estimate or accurate")
        query.total = raw
    elif name == "_summary":
        if raw not in ("true", "false", "count", "text", "data"):
            raise FhirError(400, "value", "_summary must be true, false, count, text or data")
        query.summary = None if raw == "false" else raw
    elif name == "_elements":
        query.elements.extend(e.strip() for e in raw.split(",") if e.strip())
    elif name == "_cursor":
        query.cursor = raw
    elif name == "_sort":
        query.ignored.append("_sort")

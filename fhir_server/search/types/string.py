"""string: starts-with by default, case- and accent-insensitive; ``:exact`` and ``:contains``."""

from __future__ import annotations

from typing import Any

from fhir_server.search.conditions import Condition, StringMatch
from fhir_server.search.types.common import SHORT, SearchValueError, normalise, unescape

TABLE = "string"
# Parts of HumanName/Address (and similar) that carry searchable text; codes such as 'use' do not.
_SKIP_KEYS = {"use", "type", "period", "extension", "id", "system"}


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for value in values:
        for text in _strings(value, 0):
            rows.append({"value_norm": normalise(text), "value_exact": text[:SHORT]})
    return rows


def _strings(value: Any, depth: int) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item, depth)]
    if isinstance(value, dict) and depth < 2:
        return [s for key, item in value.items() if key not in _SKIP_KEYS for s in _strings(item, depth + 1)]
    return []


def parse(raw: str, modifier: str | None) -> Condition:
    value = unescape(raw)
    if not value:
        raise SearchValueError("Empty string value")
    if modifier is None:
        return StringMatch(normalise(value), "starts")
    if modifier == "exact":
        return StringMatch(value, "exact")
    if modifier == "contains":
        return StringMatch(normalise(value), "contains")
    raise SearchValueError(f"Modifier ':{modifier}' is not supported for string parameters")

"""uri: exact match by default; ``:below`` (prefix) and ``:above`` (the value starts with the indexed URI)."""

from __future__ import annotations

from typing import Any

from fhir_server.search.conditions import Condition, UriMatch
from fhir_server.search.types.common import LONG, SearchValueError

TABLE = "uri"


def index(values: list[Any]) -> list[dict[str, Any]]:
    return [{"value": value[:LONG]} for value in values if isinstance(value, str)]


def parse(raw: str, modifier: str | None) -> Condition:
    if not raw:
        raise SearchValueError("Empty uri value")
    if modifier in (None, "below", "above"):
        return UriMatch(raw, modifier or "eq")
    raise SearchValueError(f"Modifier ':{modifier}' is not supported for uri parameters")

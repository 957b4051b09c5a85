"""uri: exact match by default; ``:below`` (prefix) and ``:above`` (the value starts with the indexed URI); a
canonical's ``url|version``."""

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
    if modifier not in (None, "below", "above"):
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for uri parameters")
    url, bar, version = raw.partition("|")
    if bar and modifier == "above":
        raise SearchValueError("':above' takes a URL without a '|version'")
    if bar and not (url and version):
        raise SearchValueError(f"'{raw[:60]}' must be url or url|version")
    # R4: a canonical's ``url|version`` (``:below``: that version and those beneath it, 1 → 1.2 but not 10).
    return UriMatch(url, modifier or "eq", version or None)

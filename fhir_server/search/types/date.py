"""date: values indexed as the [low, high] range their precision implies; prefixes eq ne gt lt ge le sa eb ap."""

from __future__ import annotations

from typing import Any

from fhir_server.search.conditions import Condition, DateMatch
from fhir_server.search.fhirdate import MAX_DATE, MIN_DATE, DateFormatError, parse_range
from fhir_server.search.types.common import SearchValueError, split_prefix

TABLE = "date"


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for value in values:
        if isinstance(value, str):
            _add(rows, value, value)  # parsed once: parse_range is cached
        elif isinstance(value, dict):
            if "start" in value or "end" in value:  # Period
                _add(rows, value.get("start"), value.get("end"))
            for event in value.get("event", ()) if isinstance(value.get("event"), list) else ():  # Timing
                _add(rows, event, event)
    return rows


def _add(rows: list[dict[str, Any]], start: Any, end: Any) -> None:
    try:
        low = parse_range(start)[0] if isinstance(start, str) else None
        high = parse_range(end)[1] if isinstance(end, str) else None
    except DateFormatError:
        return
    if low is not None or high is not None:
        # An open Period end is unbounded on that side; sentinels keep the SQL comparisons simple.
        rows.append({"low": low or MIN_DATE, "high": high or MAX_DATE})


def parse(raw: str, modifier: str | None) -> Condition:
    if modifier is not None:
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for date parameters")
    prefix, text = split_prefix(raw)
    try:
        low, high = parse_range(text)
    except DateFormatError as exc:
        raise SearchValueError(str(exc)) from None
    return DateMatch(prefix, low, high)

"""number: prefixes, with the value's precision as its range (``100`` means [99.5, 100.5))."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_server.search.conditions import Condition, NumberMatch
from fhir_server.search.types.common import SearchValueError, split_prefix

TABLE = "number"


_PLAIN = re.compile(r"-?\d+(?:\.(\d+))?")


def precision_range(text: str) -> tuple[float, float, float]:
    """(value, low, high) where low/high are half a unit of the last significant digit either side."""
    plain = _PLAIN.fullmatch(text)
    if plain:  # the common case, without Decimal arithmetic
        value = float(text)
        half = 0.5 * 10.0 ** -len(plain.group(1) or "")
        return _finite(text, (value, value - half, value + half))
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SearchValueError(f"'{text[:40]}' is not a number") from None
    if not value.is_finite():
        raise SearchValueError(f"'{text[:40]}' is not a finite number")
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)
    return _finite(text, (float(value), float(value - half), float(value + half)))


def _finite(text: str, bounds: tuple[float, float, float]) -> tuple[float, float, float]:
    # A decimal beyond a double's range (1e400) would be stored as infinity: no search could tell such values apart.
    if not all(math.isfinite(bound) for bound in bounds):
        raise SearchValueError(f"'{text[:40]}' is beyond the range of numbers a search can compare")
    return bounds


def index_range(text: str) -> tuple[float, float, float] | None:
    """precision_range for a stored value: None (no index row) when the value cannot be searched."""
    try:
        return precision_range(text)
    except SearchValueError:
        return None


def value_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    raw = getattr(value, "raw", None)
    if raw is not None:
        return raw
    return str(value) if math.isfinite(value) else None


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for value in values:
        text = value_text(value)
        bounds = index_range(text) if text is not None else None
        if bounds is not None:
            number, low, high = bounds
            rows.append({"value": number, "low": low, "high": high})
    return rows


def parse(raw: str, modifier: str | None) -> Condition:
    if modifier is not None:
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for number parameters")
    prefix, text = split_prefix(raw)
    value, low, high = precision_range(text)
    return NumberMatch(prefix, value, low, high)

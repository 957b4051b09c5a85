"""quantity: ``[prefix]number|system|code`` (system and code optional); without a system, the code matches the
Quantity's code or its unit."""

from __future__ import annotations

from typing import Any

from fhir_server.search.conditions import Condition, NumberMatch
from fhir_server.search.types.common import SearchValueError, clip, split_prefix, split_unescaped, unescape
from fhir_server.search.types.number import index_range, precision_range, value_text

TABLE = "quantity"


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for value in values:
        if not isinstance(value, dict):
            continue
        text = value_text(value.get("value"))
        bounds = index_range(text) if text is not None else None
        if bounds is None:
            continue
        number, low, high = bounds
        code, unit = value.get("code"), value.get("unit")
        rows.append({"system": clip(value.get("system")), "code": clip(code or unit), "value": number, "low": low,
                     "high": high})  # fmt: skip
        if code and isinstance(unit, str) and unit and unit != code:
            # R4: a search without a system matches "either the code or the stated human unit": the unit gets a
            # row of its own, with no system, so ``||kg`` finds it and ``http://unitsofmeasure.org|kg`` does not.
            rows.append({"system": None, "code": clip(unit), "value": number, "low": low, "high": high})
    return rows


def parse(raw: str, modifier: str | None) -> Condition:
    if modifier is not None:
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for quantity parameters")
    parts = split_unescaped(raw, "|")
    if len(parts) not in (1, 3):
        raise SearchValueError(f"Quantity '{raw[:60]}' must be number or number|system|code")
    prefix, text = split_prefix(parts[0])
    value, low, high = precision_range(text)
    system = unescape(parts[1]) or None if len(parts) == 3 else None
    code = unescape(parts[2]) or None if len(parts) == 3 else None
    return NumberMatch(prefix, value, low, high, system=system, code=code)

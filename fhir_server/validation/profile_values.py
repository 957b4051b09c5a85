"""Comparing an instance's values with what a profile says of them: ``fixed[x]`` (exactly that value), ``pattern[x]``
(the value contains it; R4 ElementDefinition.fixed[x] / pattern[x]), and whether a code, Coding, CodeableConcept or
Quantity is in a bound value set; with the values as messages show them.

``profiles.py`` checks an element's fixed value, pattern and binding with these; ``slicing.py`` matches a ``value``
or ``pattern`` discriminator with ``equal`` and ``contains``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_VALUE_KEY = re.compile(r"^(fixed|pattern)[A-Z]")


def fixed_or_pattern(element: dict[str, Any]) -> tuple[str, Any] | None:
    """("fixed" | "pattern", value) of an ElementDefinition, or None."""
    for key, value in element.items():
        match = _VALUE_KEY.match(key)
        if match:
            return match.group(1), value
    return None


def equal(instance: Any, fixed: Any) -> bool:
    if type(fixed) is dict:
        return (
            type(instance) is dict
            and instance.keys() == fixed.keys()
            and all(equal(instance[k], v) for k, v in fixed.items())
        )
    if type(fixed) is list:
        return (
            type(instance) is list
            and len(instance) == len(fixed)
            and all(equal(a, b) for a, b in zip(instance, fixed, strict=True))
        )
    return _same_primitive(instance, fixed)


def contains(instance: Any, pattern: Any) -> bool:
    """The instance has every member of the pattern; a pattern array's every element matches one of the instance's."""
    if type(pattern) is dict:
        return type(instance) is dict and all(k in instance and contains(instance[k], v) for k, v in pattern.items())
    if type(pattern) is list:
        values = instance if type(instance) is list else [instance]
        return all(any(contains(value, part) for value in values) for part in pattern)
    return _same_primitive(instance, pattern)


def _same_primitive(a: Any, b: Any) -> bool:
    # JSON true is not 1 (Python says it is); 1 and 1.0 are the same decimal.
    if (type(a) is bool) != (type(b) is bool):
        return False
    return a == b


# Codes


def in_value_set(value: Any, pairs: set[tuple[str, str]], strength: str) -> bool | None:
    """Whether a code, Coding, CodeableConcept or Quantity is in the value set; None when nothing is coded."""
    if type(value) is str:
        return value in {code for _, code in pairs}
    if type(value) is not dict:
        return None
    if "coding" in value or "text" in value:  # CodeableConcept
        codings = [c for c in value.get("coding") or () if type(c) is dict]
        if not codings:  # text alone: an extensible binding allows it, a required one does not
            return False if strength == "required" else None
        return any((c.get("system"), c.get("code")) in pairs for c in codings)
    if "code" in value:  # Coding, Quantity
        return (value.get("system"), value.get("code")) in pairs
    return None


# Values in messages


def show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def codes_shown(value: Any) -> str:
    if type(value) is str:
        return f"'{value}'"
    if type(value) is dict and "coding" in value:
        codings = [c for c in value["coding"] if type(c) is dict]
        return ", ".join(f"{c.get('system')}#{c.get('code')}" for c in codings) or "no code"
    if type(value) is dict:
        return f"{value.get('system')}#{value.get('code')}"
    return show(value)

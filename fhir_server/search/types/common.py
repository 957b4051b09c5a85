"""Helpers shared by the parameter-type modules."""

from __future__ import annotations

import unicodedata

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SHORT, LONG = 256, 512


class SearchValueError(ValueError):
    """A malformed search value: answered with 400 naming the parameter."""


def split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and not raw[2].isalpha():
        return raw[:2], raw[2:]
    return "eq", raw


def normalise(text: str) -> str:
    """Case- and accent-insensitive form used by string search (``Müller`` matches ``muller``)."""
    if text.isascii():  # nothing to decompose: the common case, fast
        return text.casefold()[:SHORT]
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()[:SHORT]


def clip(value: str | None, length: int = SHORT) -> str | None:
    return value[:length] if isinstance(value, str) else None


def unescape(value: str) -> str:
    """FHIR search escaping: ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    return value.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def split_unescaped(value: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts

"""string: starts-with by default (of the string or of a word in it), case- and accent-insensitive; ``:exact`` and
``:contains``."""

from __future__ import annotations

import re
from typing import Any

from fhir_server.search.conditions import Condition, StringMatch
from fhir_server.search.types.common import SHORT, SearchValueError, normalise, unescape

TABLE = "string"
PART = ""  # the exact value of a word-start row: no exact search or sort key is empty (empty values are ignored)
# Parts of HumanName/Address (and similar) that carry searchable text; codes such as 'use' do not.
_SKIP_KEYS = {"use", "type", "period", "extension", "id", "system"}


MAX_PARTS = 8  # word starts indexed per string beyond its own start: names and addresses, not paragraphs
_WORD_BREAK = re.compile(r"[\s\-]+")


def index(values: list[Any]) -> list[dict[str, Any]]:
    """A row per string, leading whitespace ignored (an R4 SHOULD), and a row per later word start ("van der
    Berg": "der Berg", "Berg"), so that ``family=berg`` finds it (R4: a SHOULD for the parts of a name).  A part's
    row has no exact value: ``:exact`` matches whole strings only, and sorting reads whole strings only."""
    rows: list[dict[str, Any]] = []
    for value in values:
        for text in _strings(value, 0):
            stripped = text.lstrip()
            rows.append({"value_norm": normalise(stripped), "value_exact": text[:SHORT]})
            for number, found in enumerate(_WORD_BREAK.finditer(stripped[:SHORT])):
                part = stripped[found.end() :]
                if number >= MAX_PARTS or not part:
                    break
                rows.append({"value_norm": normalise(part), "value_exact": PART})
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

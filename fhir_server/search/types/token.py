"""token: codes, Codings, CodeableConcepts, Identifiers, ContactPoints, booleans."""

from __future__ import annotations

from typing import Any

from fhir_server.search.conditions import Condition, TokenMatch
from fhir_server.search.types.common import SearchValueError, clip, normalise, split_unescaped, unescape

TABLE = "token"


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for value in values:
        if isinstance(value, bool):
            rows.append(_row(None, "true" if value else "false"))
        elif isinstance(value, str):
            rows.append(_row(None, value))
        elif isinstance(value, dict):
            _index_complex(value, rows)
    return rows


def _index_complex(value: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
        for coding in value.get("coding", ()):
            if isinstance(coding, dict):
                rows.append(_row(coding.get("system"), coding.get("code"), coding.get("display")))
        if isinstance(value.get("text"), str):
            rows.append(_row(None, None, value["text"]))
    elif "code" in value:  # Coding (or Quantity indexed as token)
        rows.append(_row(value.get("system"), value.get("code"), value.get("display")))
    elif "value" in value:  # Identifier, ContactPoint
        type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
        rows.append(_row(value.get("system"), str(value["value"]), type_text))


def _row(system: Any, code: Any, text: Any = None) -> dict[str, Any]:
    return {
        "system": clip(system) if isinstance(system, str) else None,
        "code": clip(code) if isinstance(code, str) else None,
        "text": normalise(text) if isinstance(text, str) else None,
    }


def parse(raw: str, modifier: str | None) -> Condition:
    if modifier == "text":
        return TokenMatch(None, None, text=normalise(unescape(raw)))
    if modifier not in (None, "not", "exact"):
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for token parameters")
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return TokenMatch(None, unescape(parts[0]) or _empty())
    if len(parts) == 2:
        system, code = (unescape(p) for p in parts)
        return TokenMatch(system, code or None) if (system or code) else _empty()
    raise SearchValueError(f"Token value '{raw[:60]}' has more than one unescaped '|'")


def _empty() -> TokenMatch:
    raise SearchValueError("Empty token value")

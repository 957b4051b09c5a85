"""FHIR JSON in and out, with the traps of docs/security.md closed.

Parsing uses the standard library (its hooks let us refuse duplicate keys, NaN and absurd numbers) and keeps each
decimal's original spelling, because FHIR decimals carry precision (``1.50`` is not ``1.5``).  Serialising uses
orjson and writes decimals back exactly as received.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from fhir_server.errors import FhirError

MAX_DEPTH = 64
MAX_NUMBER_LENGTH = 64
MAX_INTEGER = 10**18

# Control characters other than tab, LF and CR, and unpaired surrogates, are not valid in FHIR strings.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


class FhirDecimal(float):
    """A float that remembers how it was written, so ``1.50`` goes back out as ``1.50``."""

    __slots__ = ("raw",)

    def __new__(cls, raw: str) -> FhirDecimal:
        value = super().__new__(cls, raw)
        value.raw = raw
        return value


class _JsonTrap(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _JsonTrap("structure", f"Duplicate JSON property '{dup}'")
    return obj


def _float(text: str) -> FhirDecimal:
    if len(text) > MAX_NUMBER_LENGTH:
        raise _JsonTrap("value", f"Number with {len(text)} characters is too long")
    value = FhirDecimal(text)
    if value in (float("inf"), float("-inf")):
        raise _JsonTrap("value", f"Number {text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_LENGTH:
        raise _JsonTrap("value", f"Number with {len(text)} characters is too long")
    return int(text)


def _constant(name: str) -> None:
    raise _JsonTrap("value", f"'{name}' is not a valid JSON number")


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_float, parse_int=_int, parse_constant=_constant, strict=True
)


def parse(body: bytes) -> Any:
    """Parse a request body, raising FhirError (400) for every trap in docs/security.md's bad-input table."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FhirError(400, "structure", f"Body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = _decoder.decode(text)
    except _JsonTrap as trap:
        raise FhirError(400, trap.code, str(trap)) from None
    except RecursionError:
        raise FhirError(400, "structure", f"JSON nesting is deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise FhirError(
            400, "structure", f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. int() refusing a huge literal
        raise FhirError(400, "value", f"Invalid number: {exc}") from None
    _check_tree(value, "", 0)
    return value


def _check_tree(value: Any, path: str, depth: int) -> None:
    """Depth bound, forbidden characters, and JSON shapes FHIR forbids (null members, empty strings)."""
    if depth > MAX_DEPTH:
        raise FhirError(400, "structure", f"JSON nesting is deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if _BAD_CHARS.search(key):
                raise FhirError(400, "value", f"Invalid character in property name at {path or 'root'}")
            if item is None:
                raise FhirError(400, "structure", f"Property '{where}' is null", expression=[where])
            _check_tree(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            # null is legal only inside arrays of primitives (to align with their _element twin)
            if item is not None:
                _check_tree(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        if _BAD_CHARS.search(value):
            raise FhirError(
                400, "value", f"Invalid character (control or lone surrogate) in '{path}'", expression=[path]
            )
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INTEGER:
        # 32-bit bounds of 'integer' elements are checked by the models; nothing in FHIR needs numbers this big.
        raise FhirError(400, "value", f"Number at '{path}' is out of range", expression=[path])


def _default(value: Any) -> Any:
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.raw)
    raise TypeError(f"Cannot serialise {type(value).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)


def loads_stored(content: bytes | str) -> Any:
    """Read JSON the server itself wrote (already checked), keeping decimal spelling."""
    if isinstance(content, bytes):
        content = content.decode("utf-8")
    return json.loads(content, parse_float=FhirDecimal)


def loads_values(content: bytes | str) -> Any:
    """Read JSON the server itself wrote, for its values only (a decimal comes back as a plain float, its spelling
    lost): for contents that are looked at and never written back, ~5 times faster than ``loads_stored``."""
    return orjson.loads(content)


def pretty(content: bytes) -> bytes:
    return dumps(loads_stored(content), pretty=True)

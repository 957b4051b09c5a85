"""FHIR R4 primitive values in JSON: the JSON type each must have and the lexical rules of each type.

The regular expressions are the specification's own (``r4_types.json``, from each primitive's StructureDefinition);
on top of them, what a regex cannot say: a real calendar date, the range of an int32, strict base64, the 1 MB
limit of a string, the forms of a reference (``formats.py``) and lowercase UUIDs.  Each check returns a short
reason, or None when the value is fine.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fhir_server.validation.definitions as definitions
from fhir_server.fhirjson import FhirDecimal
from fhir_server.validation.formats import base64_problem, canonical_problem, reference_problem

INT32 = 2**31 - 1
MAX_STRING = 1024 * 1024  # R4 §2.1.28.0.1: strings SHALL NOT exceed 1 MB
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
_DATE_PREFIX = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")

Problem = str | None


def json_type_problem(kind: str, value: Any) -> Problem:
    """The value's JSON type against the primitive's (R4 §2.6.2: numbers and booleans unquoted, the rest strings)."""
    expected = definitions.PRIMITIVE_JSON.get(kind, "string")
    actual = _json_type(value)
    if expected == "number" and actual in ("integer", "number"):
        return None
    return None if expected == actual else f"{kind} must be a JSON {expected}, not {_article(actual)}"


def _json_type(value: Any) -> str:
    if type(value) is bool:
        return "boolean"
    if type(value) is int:
        return "integer"
    if type(value) is float or type(value) is FhirDecimal:
        return "number"
    if type(value) is str:
        return "string"
    return "object" if type(value) is dict else "array" if type(value) is list else "null"


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


@cache
def _regex(kind: str) -> re.Pattern[str] | None:
    info = definitions.type_info(kind)
    pattern = (info or {}).get("regex")
    # Java regex semantics (HL7 wrote them for it): \s and \S are ASCII, so a no-break space is a character
    return re.compile(pattern, re.ASCII) if pattern else None


def value_problem(kind: str, value: Any) -> Problem:
    """The lexical and range rules of a value whose JSON type is right."""
    special = _SPECIAL.get(kind)
    if special is not None:
        problem = special(value)
        if problem is not None:
            return problem
    if type(value) is str:
        # R4 limits strings, not base64Binary (a Binary's content: bounded by the request size limit alone)
        if len(value) > MAX_STRING and kind != "base64Binary":
            return f"value is longer than permitted maximum length of 1 MB ({MAX_STRING} bytes)"
        if kind in ("xhtml", "base64Binary"):  # judged by narrative.py and base64_problem
            return None
        if kind in ("string", "markdown") and value.strip() == "":
            return "a string must hold at least one character that is not whitespace"
        regex = _regex(kind)
        if regex is not None and not regex.fullmatch(value):
            return f"'{value[:64]}' is not a valid {kind}"
    return None


def _integer(low: int) -> Callable[[Any], Problem]:
    def check(value: Any) -> Problem:
        if not low <= value <= INT32:
            return f"{value} is outside the range {low}..{INT32}"
        return None

    return check


def _date_like(kind: str) -> Callable[[Any], Problem]:
    def check(value: Any) -> Problem:
        regex = _regex(kind)
        if regex is not None and not regex.fullmatch(value):
            return f"'{value[:64]}' is not a valid {kind}"
        match = _DATE_PREFIX.match(value)
        if match and match.group(3):
            try:
                dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError:
                return f"'{value[:64]}' is not a real calendar date"
        return None

    return check


def _uri(value: str) -> Problem:
    if value.startswith("urn:uuid:") and not _UUID.fullmatch(value):
        return "a urn:uuid: URI holds a lowercase UUID"
    if value.startswith("urn:oid:") and not _OID.fullmatch(value):
        return "'urn:oid:' must be followed by an OID"
    return None


def uuid_problem(value: str) -> Problem:
    return None if _UUID.fullmatch(value) else "a uuid is 'urn:uuid:' and a lowercase UUID"


def _oid(value: str) -> Problem:
    return None if _OID.fullmatch(value) else "an oid is 'urn:oid:' and an OID"


def _canonical(value: str) -> Problem:
    return canonical_problem(value) or _uri(value)


def absolute_uri_problem(value: str) -> Problem:
    """Coding.system, Identifier.system, Quantity.system...: an absolute URI (not a local reference)."""
    if _ABSOLUTE.fullmatch(value):
        return _uri(value)
    return f"'{value[:64]}' must be an absolute URI, not a local reference"


_SPECIAL: dict[str, Callable[[Any], Problem]] = {
    "integer": _integer(-INT32 - 1),
    "unsignedInt": _integer(0),
    "positiveInt": _integer(1),
    "date": _date_like("date"),
    "dateTime": _date_like("dateTime"),
    "instant": _date_like("instant"),
    "uri": _uri,
    "uuid": uuid_problem,
    "oid": _oid,
    "canonical": _canonical,
    "url": _uri,
    "base64Binary": base64_problem,
}


def reference_format_problem(value: str) -> Problem:
    return reference_problem(value)

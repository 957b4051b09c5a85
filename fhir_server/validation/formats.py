"""Syntax of the string primitives pydantic lets through: Reference.reference, canonical, uri, base64Binary.

Each check returns a short reason, or None when the value is fine.  References are where a malformed value does
harm (``Patient/`` is stored and matches nothing; ``javascript:alert(1)`` is rendered as a link by some viewer), so
R4's forms are accepted and nothing else (R4 §2.3.0.1, ref-1):

- relative ``Type/id`` or ``Type/id/_history/vid``, Type a FHIR R4 resource type, ids ``[A-Za-z0-9\\-.]{1,64}``
- an absolute ``http``/``https`` URL with a host
- ``#id`` (a contained resource) or ``#`` (the container)
- ``urn:oid:`` with an OID, and any other URN (``urn:uuid:``...; as HL7's validator, a URN that names nothing
  simply does not resolve)

Conditional references (``Patient?identifier=...``) exist only inside a transaction, which resolves them before any
entry is validated, so a stored resource never holds one.
"""

from __future__ import annotations

import binascii
import re
from urllib.parse import urlsplit

from fhir_server import models

_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"([A-Za-z]+)/{_ID}(?:/_history/{_ID})?")
_LOCAL = re.compile(rf"#(?:{_ID})?")
_OID = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+")
_URN = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9\-]{0,31}:\S+")
_WHITESPACE = re.compile(r"\s")
_BASE64_SPACE = re.compile(r"\s+")


def reference_problem(value: str) -> str | None:
    if _WHITESPACE.search(value):
        return "a reference contains no whitespace"
    if value.startswith("#"):
        return None if _LOCAL.fullmatch(value) else "a local reference is '#' followed by the contained resource's id"
    if value.startswith("urn:oid:"):
        return None if _OID.fullmatch(value) else "'urn:oid:' must be followed by an OID"
    if _URN.fullmatch(value):  # urn:uuid: and any other URN (one that names nothing here simply does not resolve)
        return None
    match = _RELATIVE.fullmatch(value)
    if match is not None:
        if not models.is_r4_type(match.group(1)):
            return f"'{match.group(1)[:64]}' is not a FHIR R4 resource type"
        return None
    if _is_http_url(value):
        return None
    return "a reference is Type/id (ids of 1-64 [A-Za-z0-9-.]), an http(s) URL, #id, urn:uuid: or urn:oid:"


def canonical_problem(value: str) -> str | None:
    if _WHITESPACE.search(value):
        return "a canonical URL contains no whitespace"
    url, bar, version = value.partition("|")
    if not url:
        return "a canonical needs a URL before '|'"
    if bar and not version:
        return "'|' must be followed by a version (an empty version names no version)"
    if "|" in version:
        return "a canonical has at most one '|version'"
    return None


def uri_problem(value: str) -> str | None:
    return "a URI contains no whitespace" if _WHITESPACE.search(value) else None


def base64_problem(value: str) -> str | None:
    # R4: (\s*([0-9a-zA-Z\+\=/]){4}\s*)+ — binascii in strict mode checks the alphabet and the padding.
    compact = _BASE64_SPACE.sub("", value)
    if not compact or len(compact) % 4:
        return "not base64 (its length is not a multiple of 4)"
    try:
        binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return "not base64"
    return None


def _is_http_url(value: str) -> bool:
    if not value.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced '[' in the host
        return False
    return bool(parts.hostname)

"""Which language the form speaks: the client's own choice on the form's switch, else the language the EHR's
launch gave (SMART's ``locale`` context or the style's), else the Patient's preferred ``communication``, else the
browser's ``Accept-Language``, else English.  Only languages this server has (shipped or from a content pack) are
chosen; ``fr-CA`` is served as ``fr``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.core import negotiate_locale

from fhir_server.i18n.catalogues import SOURCE_LANGUAGE

MAX_TAG = 35  # RFC 5646 recommends supporting tags of at least 35 characters


def _candidates(tag: str | None) -> list[str]:
    """``fr-CA`` → [``fr_CA``, ``fr``] (Babel's separator), nothing for a malformed tag."""
    if not tag or not isinstance(tag, str) or len(tag) > MAX_TAG:
        return []
    tag = tag.strip().replace("_", "-")
    parts = [p for p in tag.split("-") if p]
    if not parts or not all(p.isalnum() for p in parts):
        return []
    return ["_".join(parts), parts[0]] if len(parts) > 1 else [parts[0]]


def best(tag: str | None, available: Sequence[str]) -> str | None:
    """The available language a single tag asks for, or None."""
    found = negotiate_locale(_candidates(tag), list(available), sep="_") if tag else None
    return found if found in available else None


def accept_language(header: str | None) -> list[str]:
    """The tags of an ``Accept-Language`` header by preference (q-values; ``*`` and q=0 dropped)."""
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "")[:1000].split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def patient_languages(patient: dict[str, Any] | None) -> list[str]:
    """``Patient.communication``: the preferred ones first, each ``language`` coding's code (urn:ietf:bcp:47)."""
    found: list[tuple[int, str]] = []
    for communication in (patient or {}).get("communication") or []:
        if not isinstance(communication, dict):
            continue
        for coding in (communication.get("language") or {}).get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                found.append((0 if communication.get("preferred") is True else 1, coding["code"]))
    return [code for _, code in sorted(found, key=lambda pair: pair[0])]


def negotiate(
    available: Sequence[str],
    *,
    chosen: str | None = None,
    launch: str | None = None,
    patient: Iterable[str] = (),
    accept: str | None = None,
) -> str:
    """The form's language, in the order the module says."""
    for tag in [chosen, launch, *patient, *accept_language(accept)]:
        found = best(tag, available)
        if found:
            return found
    return SOURCE_LANGUAGE


def direction(language: str) -> str:
    """``rtl`` for Arabic, Hebrew, Persian, Urdu…, else ``ltr`` (from CLDR, through Babel)."""
    try:
        return Locale.parse(language.replace("-", "_")).text_direction
    except (ValueError, UnknownLocaleError):
        return "ltr"


def display_name(language: str) -> str:
    """The language's name in itself (``français``, ``español``, ``العربية``), for the form's switch."""
    try:
        name = Locale.parse(language.replace("-", "_")).get_display_name() or language
    except (ValueError, UnknownLocaleError):
        return language
    return name[:1].upper() + name[1:]

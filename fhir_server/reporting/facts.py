"""Rows of the reporting index (store/tables.py ``idx_report``): what supervisors' indicators count, one flat row per
scored result and per Flag, computed from the resource like its search index rows and replaced with them on every
write (the indexer calls ``report_rows``).

The indicators (``indicators/``, fhir_server/reporting/) are SQL over this table, never over resources loaded into
Python: 500,000 Observations a year have to be counted in well under two seconds.  Each row carries what was
decided when the session was scored — the clinician and program it was attributed to (scoring/attribution.py), the
cutoff interpretation as the site ran it, the change from intake the scoring rules coded — so a report says what
the clinicians saw at the time, and a clinician who moves to another program does not take their history along.

- ``param`` ``score``: one row per number with a fit-measures code — the Observation's own code (a total) and each
  numeric component (items, WAI-SR subscale means) — for Observations that still count (not entered-in-error).
  ``below`` is the cutoff interpretation of the total (V3 ``L``: True, ``N``: False, none: NULL); ``change`` the
  fit-interpretation codes, space-separated and padded (`` reliable-improvement clinically-significant-improvement ``)
  so that a rule tests one with ``LIKE '% code %'``.
- ``param`` ``flag``: one row per fit-flags code of a Flag scoring raised, with its status and, when a clinician
  acknowledged it in the clinician view, when.

``session`` is what makes two results one session: their Encounter, else the client's day (UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.canonical import FLAGS_CODESYSTEM, MEASURES_CODESYSTEM
from fhir_server.scoring.attribution import CLINICIAN, PROGRAM
from fhir_server.scoring.resources import ACKNOWLEDGED, SERIES_CODE, series_of
from fhir_server.search.fhirdate import parse_instant

SCORE, FLAG = "score", "flag"
TYPES = ("Observation", "Flag")
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FIT_INTERPRETATION = "http://fit-fhir.org/fhir/CodeSystem/fit-interpretation"
_NOT_COUNTED = {"entered-in-error", "cancelled"}
_REF_LEN, _CODE_LEN, _SERIES_LEN = 140, 128, 200


def report_rows(resource_type: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource_type not in TYPES or resource.get("status") in _NOT_COUNTED:
        return []
    subject = _reference(resource.get("subject"))
    if subject is None or not subject.startswith("Patient/"):
        return []
    when = resource.get("effectiveDateTime") if resource_type == "Observation" else _period(resource).get("start")
    at = _instant(when)
    if at is None:
        return []
    encounter = _reference(resource.get("encounter"))
    shared = {
        "subject_id": subject.partition("/")[2][:64],
        "series": series_of(resource)[:_SERIES_LEN],
        "at": at,
        "month": at.strftime("%Y-%m"),
        "session": encounter[:_REF_LEN] if encounter else f"day:{at.date().isoformat()}",
        "encounter": encounter[:_REF_LEN] if encounter else None,
        "clinician": _extension_reference(resource, CLINICIAN),
        "program": _extension_reference(resource, PROGRAM),
        # every row has every column: rows are inserted many at a time
        **dict.fromkeys(("value", "below", "change", "status", "acknowledged_at")),
    }
    if resource_type == "Flag":
        acknowledged = _acknowledged(resource)
        return [
            {**shared, "param": FLAG, "code": code, "status": resource.get("status"), "acknowledged_at": acknowledged}
            for code in _codes(resource.get("code"), FLAGS_CODESYSTEM)
        ]
    return _score_rows(resource, shared)


def _score_rows(observation: dict[str, Any], shared: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    value = _number(observation.get("valueQuantity"))
    if value is not None:
        below, change = _interpretation(observation.get("interpretation"))
        for code in _codes(observation.get("code"), MEASURES_CODESYSTEM):
            rows.append({**shared, "param": SCORE, "code": code, "value": value, "below": below, "change": change})
    for component in observation.get("component") or ():
        number = _number(component.get("valueQuantity")) if isinstance(component, dict) else None
        if number is None:
            continue
        for code in _codes(component.get("code"), MEASURES_CODESYSTEM):
            if code != SERIES_CODE:
                rows.append({**shared, "param": SCORE, "code": code, "value": number, "below": None, "change": None})
    return rows


def _interpretation(interpretations: Any) -> tuple[bool | None, str | None]:
    below, changes = None, []
    for concept in interpretations if isinstance(interpretations, list) else ():
        for coding in (concept or {}).get("coding") or () if isinstance(concept, dict) else ():
            if not isinstance(coding, dict):
                continue
            if coding.get("system") == V3 and coding.get("code") in ("L", "N"):
                below = coding["code"] == "L"
            elif coding.get("system") == FIT_INTERPRETATION and isinstance(coding.get("code"), str):
                changes.append(coding["code"])
    return below, (" " + " ".join(sorted(set(changes))) + " ")[:_CODE_LEN] if changes else None


def _codes(concept: Any, system: str) -> list[str]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    found = {
        c["code"][:_CODE_LEN]
        for c in codings or ()
        if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)
    }
    return sorted(found)


def _number(quantity: Any) -> float | None:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _reference(value: Any) -> str | None:
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or reference.count("/") != 1 or not all(reference.split("/")):
        return None
    return reference


def _extension_reference(resource: dict[str, Any], url: str) -> str | None:
    for extension in resource.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            found = _reference(extension.get("valueReference"))
            return found[:_REF_LEN] if found else None
    return None


def _acknowledged(flag: dict[str, Any]) -> datetime | None:
    for extension in flag.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == ACKNOWLEDGED:
            parts = {e.get("url"): e for e in extension.get("extension") or () if isinstance(e, dict)}
            return _instant((parts.get("at") or {}).get("valueDateTime"))
    return None


def _period(flag: dict[str, Any]) -> dict[str, Any]:
    period = flag.get("period")
    return period if isinstance(period, dict) else {}


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None

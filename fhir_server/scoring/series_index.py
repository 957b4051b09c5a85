"""Rows of the clinical series index (store/tables.py ``idx_series``), computed from a resource like its search
index rows and replaced with them on every write.

Scoring reads, on every submission, a rater series' newest results of one measure, its first (intake) and the
client's active Flags.  Through the search index those reads start from every Observation or Flag the client
has and grow with their history (a client in weekly therapy for ten years has 500 sessions).  Here each is one
range of one index: (subject, code, series, time), whatever the history.  Only what scoring reads is indexed:
scored measure Observations that still count, and Flags while they are active.
"""

from __future__ import annotations

from typing import Any

from fhir_server.canonical import FLAGS_CODESYSTEM, MEASURES_CODESYSTEM
from fhir_server.scoring.resources import series_of
from fhir_server.search.fhirdate import parse_instant

MEASURE = "measure"  # the ``param`` of a scored result's rows
ACTIVE_FLAG = "active-flag"  # … of an active Flag's rows
_SERIES_LEN = 200
_NOT_COUNTED = {"entered-in-error", "cancelled"}


def series_key(series: str) -> str:
    """The series as the index holds it (a relationship typed by a respondent can be long)."""
    return series[:_SERIES_LEN]


def series_rows(resource_type: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource_type == "Observation":
        if resource.get("status") in _NOT_COUNTED:
            return []
        return _rows(resource, MEASURE, MEASURES_CODESYSTEM, resource.get("effectiveDateTime"))
    if resource_type == "Flag":
        if resource.get("status") != "active":
            return []
        return _rows(resource, ACTIVE_FLAG, FLAGS_CODESYSTEM, (resource.get("period") or {}).get("start"))
    return []


def _rows(resource: dict[str, Any], param: str, system: str, when: Any) -> list[dict[str, Any]]:
    subject = (resource.get("subject") or {}).get("reference")
    if not isinstance(subject, str) or subject.count("/") != 1:
        return []
    subject_type, subject_id = subject.split("/")
    codes = {
        c["code"]
        for c in (resource.get("code") or {}).get("coding") or ()
        if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)
    }
    if not codes or not subject_type or not subject_id:
        return []
    try:
        at = parse_instant(when) if isinstance(when, str) else None
    except ValueError:
        at = None
    series = series_key(series_of(resource))
    row = {
        "param": param,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "system": system,
        "series": series,
        "at": at,
    }
    return [{**row, "code": code[:256]} for code in sorted(codes)]

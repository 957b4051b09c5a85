"""reference: ``Type/id``, ``id``, absolute URLs and canonical ``url|version``; ``:Type`` modifier, and ``:below`` on a
canonical (R4: it decides whether the version is read as a prefix: ``url|1`` below is 1, 1.0, 1.2.3 but not 10)."""

from __future__ import annotations

import re
from typing import Any

from fhir_server import models
from fhir_server.search.conditions import Condition, ReferenceMatch
from fhir_server.search.types.common import LONG, SearchValueError, clip

TABLE = "reference"
_RELATIVE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?")


def index(values: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for value in values:
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and not ref.startswith("#"):
                rows.append(_reference_row(ref))
        elif isinstance(value, str):  # canonical
            url, _, version = value.partition("|")
            rows.append({"target_type": None, "target_id": None, "url": clip(url, LONG), "version": version or None})
    return rows


def _reference_row(ref: str) -> dict[str, Any]:
    match = _RELATIVE.fullmatch(ref)
    if match and models.is_resource_type(match["type"]):
        return {"target_type": match["type"], "target_id": match["id"], "url": None, "version": None}
    return {"target_type": None, "target_id": None, "url": clip(ref, LONG), "version": None}


def parse(raw: str, modifier: str | None, targets: tuple[str, ...] = ()) -> Condition:
    if not raw:
        raise SearchValueError("Empty reference value")
    if modifier == "below":
        return _below(raw)
    if modifier is not None and not models.is_resource_type(modifier):
        raise SearchValueError(f"Modifier ':{modifier}' is not supported for reference parameters")
    match = _RELATIVE.fullmatch(raw)
    if match and models.is_resource_type(match["type"]):
        if modifier and modifier != match["type"]:
            raise SearchValueError(f"':{modifier}' contradicts the value's type '{match['type']}'")
        return ReferenceMatch(match["type"], match["id"])
    if "://" in raw or raw.startswith("urn:"):
        url, _, version = raw.partition("|")
        return ReferenceMatch(None, None, url=url, version=version or None)
    if re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", raw):
        target = modifier or (targets[0] if len(targets) == 1 else None)
        return ReferenceMatch(target, raw)
    raise SearchValueError(f"'{raw[:60]}' is not a valid reference")


def _below(raw: str) -> Condition:
    if "://" not in raw and not raw.startswith("urn:"):
        raise SearchValueError(f"':below' needs a canonical URL (url or url|version), not '{raw[:60]}'")
    url, _, version = raw.partition("|")
    # Without a version, every version of the canonical matches (as it does without :below).
    return ReferenceMatch(None, None, url=url, version=version or None, version_below=bool(version))

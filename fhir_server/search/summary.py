"""``_summary`` and ``_elements``: trim a resource to the requested elements and tag it SUBSETTED."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_server import models

_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@cache
def _summary_elements(resource_type: str) -> frozenset[str]:
    model = models.model_class(resource_type)
    names = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(field.alias or name)
    return frozenset(names)


def shape_resource(resource: dict[str, Any], summary: str | None, elements: list[str]) -> dict[str, Any]:
    resource_type = resource.get("resourceType", "")
    if summary == "text":
        keep = {"text", *_mandatory(resource_type)}
    elif summary == "data":
        keep = {k for k in resource if k != "text"}
    elif summary == "true":
        keep = set(_summary_elements(resource_type))
    else:
        keep = set(elements) | _mandatory(resource_type)
    out = {k: v for k, v in resource.items() if k in keep or k in _ALWAYS}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out


def _mandatory(resource_type: str) -> set[str]:
    model = models.model_class(resource_type)
    # Primitive elements carry element_required; complex ones (Observation.code) are plain required fields.
    return {
        (field.alias or name)
        for name, field in model.model_fields.items()
        if field.is_required()
        or (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("element_required"))
    }

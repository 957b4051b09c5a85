"""Per-type element tables, built once from the R4B models, that the strict walk (``strict.py``) reads.

fhir.resources validates with pydantic in lax mode, which coerces JSON types: ``"1"``, ``85.0`` and ``true`` all
become the integer 1, ``"true"`` a boolean, ``"3.5"`` a decimal.  The JSON representation of FHIR allows none of
that, so the walk checks every element's JSON type against its FHIR type.  Looking a field's FHIR type up from its
pydantic annotation is reflection, far too slow for every request: this module does it once per (model, path)
and keeps a plain ``{json key: Element}`` dict, so the walk costs one dict look-up per JSON member.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache

from fhir_server import models
from fhir_server.validation.bindings import required_codes

# The FHIR primitive a fhir_core annotation marker stands for → the JSON check the walk applies.  Every string
# primitive whose format pydantic already checks by pattern (code, id, date, ...) is just "string" here.
_KIND_OF_MARKER = {
    "Integer": "integer",
    "PositiveInt": "positiveInt",
    "UnsignedInt": "unsignedInt",
    "Decimal": "decimal",
    "Uri": "uri",
    "Url": "uri",
    "Canonical": "canonical",
    "Xhtml": "xhtml",
    "Base64Binary": "base64Binary",
    "String": "string",
    "Code": "string",
    "Id": "string",
    "Markdown": "string",
    "Oid": "string",
    "UuidVersion": "string",
    "Date": "string",
    "DateTime": "string",
    "Instant": "string",
    "Time": "string",
}


@dataclass(frozen=True, slots=True)
class Element:
    kind: str  # a primitive kind above, "boolean", "reference", "complex", "resource" or "unknown"
    path: str  # R4 element path used for the binding look-up and for the recursion ("Identifier", "Patient.contact")
    model: type | None = None  # the model to walk into, for "complex"
    codes: frozenset[str] | None = None  # required-binding codes of a bound code


@cache
def elements(model: type, element_path: str) -> dict[str, Element]:
    """JSON key → Element for one model at one element path (cached: built once per process)."""
    table: dict[str, Element] = {}
    for key, field in models.fields_by_key(model).items():
        if key == "fhir_comments":  # a fhir.resources field, not an R4 element: it would be stored silently
            table[key] = Element("unknown", key)
            continue
        child_model = models.element_model(field.annotation)
        if child_model is not None:
            table[key] = _complex(model, element_path, key, child_model)
        elif element_path == "Reference" and key == "reference":
            table[key] = Element("reference", "Reference.reference")
        else:
            path = f"{element_path}.{key}"
            table[key] = Element(_primitive_kind(field.annotation), path, None, required_codes(path))
    return table


def _complex(model: type, element_path: str, key: str, child: type) -> Element:
    if child.__name__ in ("Resource", "DomainResource") or models.is_resource_type(child.__name__):
        return Element("resource", f"{element_path}.{key}")  # contained, Bundle.entry.resource: typed by the JSON
    if child is model:  # recursive backbone (Questionnaire.item.item is Questionnaire.item)
        return Element("complex", element_path, child)
    if key.startswith("_") or _is_datatype(child):
        return Element("complex", child.__name__, child)
    return Element("complex", f"{element_path}.{key}", child)


def _primitive_kind(annotation: typing.Any) -> str:
    for arg in _flatten(annotation):
        if arg is bool:
            return "boolean"
        for marker in getattr(arg, "__metadata__", ()):
            kind = _KIND_OF_MARKER.get(type(marker).__name__)
            if kind is not None:
                return kind
    # Every R4B primitive is in the table above (tests/validation/test_strict.py checks it): "string" is the safe
    # default for a new one, since every FHIR primitive other than the numbers and boolean is a JSON string.
    return "string"


def _flatten(annotation: typing.Any) -> list[typing.Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        return [annotation]
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [flat for arg in args for flat in _flatten(arg)]


def _is_datatype(model: type) -> bool:
    # Datatypes live in a module named after them (fhir.resources.R4B.identifier.Identifier); backbone
    # elements live in their resource's module (fhir.resources.R4B.patient.PatientContact).
    return model.__module__.rsplit(".", 1)[-1] == model.__name__.lower()

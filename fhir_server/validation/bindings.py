"""Required bindings: fhir.resources accepts any code (``Observation.status = "done"``); R4 does not.

The code lists come from the R4 specification (``data/required_bindings.json``, keyed by element path such as
``Observation.status`` or ``Identifier.use``).  The walker follows only the keys present in the JSON, resolving
each key's model class once and caching it, so a typical resource costs a few microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server import models
from fhir_server.errors import Issue


@cache
def _bindings() -> dict[str, frozenset[str]]:
    raw = orjson.loads(resources.files("fhir_server.validation").joinpath("data/required_bindings.json").read_bytes())
    # Abstract codes (e.g. Questionnaire.item.type 'question') are in the value set but may not be used.
    return {
        path: frozenset(spec["codes"]) - frozenset(spec.get("notSelectable", ()))
        for path, spec in raw.items()
        if not path.startswith("_")
    }


@dataclass(frozen=True)
class _Child:
    element_path: str  # e.g. "Patient.contact.gender"
    model: type | None  # the child's model class, None for primitives
    codes: frozenset[str] | None  # required-binding codes when the child is a bound code
    is_resource: bool  # contained / Bundle.entry.resource: the JSON names its own type


def check_required_bindings(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    _walk(models.model_class(resource_type), resource_type, resource, resource_type, issues)
    return issues


def _walk(model: type, element_path: str, node: dict[str, Any], fhirpath: str, issues: list[Issue]) -> None:
    for key, value in node.items():
        child = _child(model, element_path, key)
        if child is None:
            continue
        for index, item in enumerate(value) if isinstance(value, list) else ((None, value),):
            where = f"{fhirpath}.{key}" if index is None else f"{fhirpath}.{key}[{index}]"
            if child.codes is not None:
                if isinstance(item, str) and item not in child.codes:
                    issues.append(
                        Issue(
                            "code-invalid",
                            f"{where}: '{item[:64]}' is not in the required value set for {child.element_path}",
                            expression=[where],
                        )
                    )
            elif child.is_resource and isinstance(item, dict):
                inner_type = item.get("resourceType")
                if isinstance(inner_type, str) and models.is_resource_type(inner_type):
                    _walk(models.model_class(inner_type), inner_type, item, where, issues)
            elif child.model is not None and isinstance(item, dict):
                _walk(child.model, child.element_path, item, where, issues)


@cache
def _child(model: type, element_path: str, key: str) -> _Child | None:
    field = models.fields_by_key(model).get(key)
    if field is None or key.startswith("_"):
        return None
    child_model = models.element_model(field.annotation)
    if child_model is None:
        path = f"{element_path}.{key}"
        codes = _bindings().get(path)
        return _Child(path, None, codes, False) if codes is not None else None
    if child_model is model:  # recursive backbone (Questionnaire.item.item is Questionnaire.item)
        return _Child(element_path, child_model, None, False)
    if child_model.__name__ in ("Resource", "DomainResource") or _is_resource_model(child_model):
        return _Child(f"{element_path}.{key}", None, None, True)
    if _is_datatype(child_model):
        return _Child(child_model.__name__, child_model, None, False)
    return _Child(f"{element_path}.{key}", child_model, None, False)


def _is_datatype(model: type) -> bool:
    # Datatypes live in a module named after them (fhir.resources.R4B.identifier.Identifier); backbone
    # elements live in their resource's module (fhir.resources.R4B.patient.PatientContact).
    return model.__module__.rsplit(".", 1)[-1] == model.__name__.lower()


def _is_resource_model(model: type) -> bool:
    return models.is_resource_type(model.__name__)

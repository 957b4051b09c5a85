"""Resources generated from the R4 Patient CompartmentDefinition: for every type in the compartment and every
parameter that puts a resource there, a resource that names a given patient through that parameter.

The element path comes from the search parameter's own FHIRPath expression (``Basic.subject.where(resolve() is
Patient)`` → ``subject``), its shape (list or single, backbone element types) from the R4 models, so the table of
cases follows the definitions instead of a hand-kept list; ``names`` checks each generated resource with the
server's own evaluator, so a generator that missed an element fails loudly instead of testing nothing.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhir_server.search.compartments import COMPARTMENTS
from fhir_server.search.registry import Registry
from fhir_server.search.types import reference


def compartment_parameters(registry: Registry) -> list[tuple[str, str]]:
    """(resource type, parameter code) for every membership rule of the Patient compartment."""
    pairs = []
    for resource_type, codes in sorted(COMPARTMENTS["Patient"]().items()):
        pairs += [(resource_type, code) for code in codes if registry.get(resource_type, code) is not None]
    return pairs


def element_path(registry: Registry, resource_type: str, code: str) -> list[str]:
    """The first alternative of the parameter's expression as element names below the resource."""
    param = registry.get(resource_type, code)
    assert param is not None and param.expression, f"{resource_type}.{code} has no expression"
    first = param.expression.split("|")[0].strip()
    first = re.sub(r"\.where\(.*?\)\)?$", "", first)
    parts = first.split(".")
    assert parts[0] == resource_type, f"unexpected expression {param.expression}"
    return parts[1:]


def _shape(model: type, name: str) -> tuple[bool, type | None]:
    annotation = model.model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    inner = args[0]
    is_list = typing.get_origin(inner) in (list, typing.List)  # noqa: UP006 - the models use typing.List
    if is_list:
        inner = typing.get_args(inner)[0]
    if isinstance(inner, types.UnionType):
        inner = typing.get_args(inner)[0]
    name_of = getattr(inner, "__name__", "")
    try:
        child = get_fhir_model_class(name_of.removesuffix("Type")) if name_of else None
    except (KeyError, ValueError):
        child = None
    return is_list, child


def naming(registry: Registry, resource_type: str, code: str, patient: str, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a resource of the type) with ``Patient/{patient}`` added at the parameter's element."""
    resource = {**base, "resourceType": resource_type}
    path = element_path(registry, resource_type, code)
    model: type | None = get_fhir_model_class(resource_type)
    node: dict[str, Any] = resource
    for depth, name in enumerate(path):
        assert model is not None, f"{resource_type}: no model below {path[:depth]}"
        is_list, child = _shape(model, name)
        last = depth == len(path) - 1
        value: dict[str, Any] = {"reference": f"Patient/{patient}"} if last else {}
        if is_list:
            node[name] = [*node.get(name, []), value] if last else [value]
        else:
            node[name] = value
        node, model = value, child
    return resource


def names(registry: Registry, resource_type: str, code: str, resource: dict[str, Any]) -> set[str]:
    """The patients the server's own evaluator finds through the parameter."""
    param = registry.get(resource_type, code)
    assert param is not None and param.evaluator is not None
    rows = reference.index(param.evaluator(resource))
    return {r["target_id"] for r in rows if r["target_type"] == "Patient"}

"""The instance side of profile validation: a resource's values as items, one per repetition of an element.

FHIR JSON splits a primitive into its value (``"birthDate"``) and a ``_birthDate`` twin (id, extension), and names
a choice element by its type (``valueQuantity`` for ``value[x]``); an ``Item`` puts each value back together with
its twin, its FHIRPath (``Observation.component[1].code``) and its type.  ``profiles.py`` walks these, and
``slicing.py`` follows discriminator paths through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.validation.profile_base import choice_type


@dataclass(slots=True)
class Item:
    """One value of an element in the instance."""

    value: Any  # a dict for a complex type or resource, the JSON primitive otherwise (None: only its "_" twin)
    twin: dict[str, Any] | None  # a primitive's "_name" object (id, extension)
    where: str  # FHIRPath of the value: Observation.component[1].code
    type: str | None  # its FHIR type, when known (a choice's suffix, a resource's resourceType, the only type)

    @property
    def node(self) -> dict[str, Any]:
        """The object holding its children: itself, or a primitive's twin."""
        if type(self.value) is dict:
            return self.value
        return self.twin if type(self.twin) is dict else {}


def children_named(node: dict[str, Any], name: str, where: str, only_type: str | None = None) -> list[Item]:
    """The items of one child in an instance object, in order: ``name``, or every ``value<Type>`` key of a choice
    ``value[x]``; a primitive's value and its ``_name`` twin make one item.  ``only_type``: the element's one type."""
    if name.endswith("[x]"):
        prefix = name[:-3]
        keys = {}
        for key in node:
            bare = key.removeprefix("_")
            kind = choice_type(bare[len(prefix) :]) if bare.startswith(prefix) else None
            if kind is not None:
                keys.setdefault(bare, kind)
    else:
        keys = {name: only_type} if name in node or f"_{name}" in node else {}
    out: list[Item] = []
    for key, kind in keys.items():
        value, twin = node.get(key), node.get(f"_{key}")
        if type(value) is list or type(twin) is list:
            values = value if type(value) is list else []
            twins = twin if type(twin) is list else []
            for index in range(max(len(values), len(twins))):
                v = values[index] if index < len(values) else None
                t = twins[index] if index < len(twins) else None
                if v is not None or t is not None:
                    out.append(Item(v, t if type(t) is dict else None, f"{where}.{key}[{index}]", _typed(v, kind)))
        elif value is not None or twin is not None:
            out.append(Item(value, twin if type(twin) is dict else None, f"{where}.{key}", _typed(value, kind)))
    return out


def _typed(value: Any, kind: str | None) -> str | None:
    # A resource (contained, Bundle.entry.resource) is of the type its JSON names.
    if kind in (None, "Resource", "DomainResource") and type(value) is dict and type(value.get("resourceType")) is str:
        return value["resourceType"]
    return kind

"""The base R4 types as profile validation reads them (``data/r4_types.json``, through ``definitions.py``).

Two uses: the type a choice key names (``valueQuantity`` → Quantity; ``profile_items.py``), and what the base
types already say — an element's base cardinality, types, binding and targets, the base invariants — which the
structure walk checks, so that the profile walk (``profiles.py``) does not say it twice.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import fhir_server.validation.definitions as definitions
from fhir_server.validation.profile_tree import Node

SD = "http://hl7.org/fhir/StructureDefinition/"


def base_tables() -> dict[str, Any]:
    """``data/r4_types.json``: the base types' elements and invariants (scripts/r4_structures.py writes it)."""
    return definitions._data()  # the same parsed tables the structure walk reads


@cache
def _type_names() -> frozenset[str]:
    return frozenset(base_tables()["types"])


def choice_type(suffix: str) -> str | None:
    """The type a choice key's suffix names: ``Quantity`` → Quantity, ``DateTime`` → dateTime; None if none."""
    if not suffix[:1].isupper():
        return None
    names = _type_names()
    if suffix in names:
        return suffix
    lowered = suffix[0].lower() + suffix[1:]
    return lowered if lowered in names else None


@cache
def _base_paths(type_name: str) -> dict[str, dict[str, Any]]:
    entry = base_tables()["types"].get(type_name) or {}
    return {element["path"]: element for element in entry.get("elements", ())}


def base_element(node: Node) -> dict[str, Any] | None:
    """The base type's element a profile's element constrains (by its ``base.path``), in the tables' compact form."""
    path = (node.element.get("base") or {}).get("path") or node.element["path"]
    return _base_paths(path.split(".", 1)[0]).get(path)


def base_types(node: Node) -> set[str] | None:
    element = base_element(node)
    return {entry["code"] for entry in element.get("type", ())} if element else None


@cache
def base_invariants() -> dict[str, frozenset[str]]:
    """Invariant key → its expressions in the base types (specializations: not SimpleQuantity's sqty-1)."""
    tables = base_tables()
    keys = {
        key
        for name, entry in tables["types"].items()
        if entry.get("type") == name
        for element in entry["elements"]
        for key in element.get("constraint", ())
    }
    out: dict[str, set[str]] = {}
    for key in keys:
        out.setdefault(key.split("@", 1)[0], set()).add(tables["constraints"][key]["expression"])
    return {key: frozenset(expressions) for key, expressions in out.items()}


def is_resource(name: str) -> bool:
    """A resource type, abstract ones (Resource, DomainResource) included."""
    return (base_tables()["types"].get(name) or {}).get("kind") == "resource"


def core_type(url: str) -> str | None:
    """The base type a target URL names (http://hl7.org/fhir/StructureDefinition/Patient → Patient), else None."""
    name = url.split("|", 1)[0].removeprefix(SD)
    entry = base_tables()["types"].get(name) if url.startswith(SD) else None
    return name if entry is not None and entry.get("type") == name else None

"""Rules of particular types that neither the structure nor the invariants of R4 express, as HL7's validator applies
them: the definition resources (SearchParameter, CapabilityStatement, StructureDefinition) against the core
definitions they name, and an Attachment's stated size and hash against its data.

``RESOURCE_RULES`` and ``DATATYPE_RULES`` map a type to its function; the validator calls each on every node of
that type.  Each function returns issues naming the node by FHIRPath.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import orjson

import fhir_server.validation.definitions as definitions
from fhir_server.errors import Issue
from fhir_server.search.paths import split_union

_LEADING_NAME = re.compile(r"\(*\s*([A-Z][A-Za-z]+)\s*[.)]")


def _error(where: str, message: str, code: str = "invalid") -> Issue:
    return Issue(code, f"{where}: {message}", expression=[where])


@cache
def _core_search_parameters() -> dict[str, tuple[str, frozenset[str]]]:
    """Core SearchParameter URL → (type, bases), from the server's copy of the R4 search parameters."""
    raw = orjson.loads(resources.files("fhir_server.search").joinpath("data/search_parameters.json").read_bytes())
    bases: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    for entry in raw:
        kinds[entry["url"]] = entry["type"]
        bases.setdefault(entry["url"], set()).add(entry["base"])
    return {url: (kinds[url], frozenset(bases[url])) for url in kinds}


def search_parameter_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    issues = []
    kind = resource.get("type")
    # Values of the wrong JSON type are the structure walk's to report: read here as if absent.
    listed, components = resource.get("base"), resource.get("component")
    bases = [b for b in listed if type(b) is str] if type(listed) is list else []
    if kind == "composite" and (len(components) if type(components) is list else 0) < 2:
        issues.append(
            _error(where, "When the SearchParameter has a type of 'composite', it must define two or more components")
        )
    derived = resource.get("derivedFrom")
    core = _core_search_parameters().get(derived.split("|")[0]) if type(derived) is str else None
    if core is not None:
        core_type, core_bases = core
        if type(kind) is str and kind != core_type:
            issues.append(_error(where, f"The type {kind} is different to the type {core_type} of {derived}"))
        for base in bases:
            if base not in core_bases and base not in ("Resource", "DomainResource"):
                issues.append(_error(where, f"The resource type {base} is not a base of {derived}, derived from"))
    expression = resource.get("expression")
    if type(expression) is str and bases and not {"Resource", "DomainResource"} & set(bases):
        for alternative in split_union(expression):
            match = _LEADING_NAME.match(alternative)
            name = match.group(1) if match else None
            if name is not None and definitions.is_resource(name) and name not in bases:
                issues.append(
                    _error(
                        f"{where}.expression",
                        f"'{name}' in '{alternative[:80]}' is not one of the parameter's bases ({', '.join(bases)})",
                    )
                )
    return issues


def capability_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    issues = []
    for r, rest in enumerate(resource.get("rest") or ()):
        for t, typed in enumerate(rest.get("resource") or () if type(rest) is dict else ()):
            for p, parameter in enumerate(typed.get("searchParam") or () if type(typed) is dict else ()):
                if type(parameter) is not dict or type(parameter.get("definition")) is not str:
                    continue
                core = _core_search_parameters().get(parameter["definition"].split("|")[0])
                if core is not None and parameter.get("type") not in (None, core[0]):
                    here = f"{where}.rest[{r}].resource[{t}].searchParam[{p}]"
                    message = f"Type mismatch: {parameter['definition']} is of type {core[0]}, not {parameter['type']}"
                    issues.append(_error(here, message))
    return issues


def structure_definition_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    """Every element path of the differential and snapshot must exist in the base type (a choice element may be
    named by one of its types: ``Observation.valueQuantity``)."""
    base = resource.get("type")
    if type(base) is not str or definitions.type_info(base) is None:
        return []
    issues = []
    for part in ("differential", "snapshot"):
        for index, element in enumerate((resource.get(part) or {}).get("element") or ()):
            path = element.get("path") if type(element) is dict else None
            if type(path) is str and not _path_exists(base, path):
                here = f"{where}.{part}.element[{index}].path"
                issues.append(_error(here, f"The path {path[:120]} is not an element of {base}", "structure"))
    return issues


def _path_exists(base: str, path: str) -> bool:
    segments = path.split(".")
    return segments[0] == base and _follows(base, base, segments[1:])


def _follows(owner: str, at: str, segments: list[str]) -> bool:
    """Whether ``segments`` name elements below (owner, at): through backbone elements, datatypes, every type of a
    choice element, and a primitive's own ``value`` (``CodeSystem.concept.display.value``)."""
    if not segments:
        return True
    segment, rest = segments[0], segments[1:]
    if definitions.is_primitive(owner):
        # below a primitive's own value, profiles generated by HL7's tools name its extensions in several ways
        return segment == "value" or _follows("Element", "Element", segments)
    table = definitions.children(owner, at)
    child = table.get(segment) or next((c for c in table.values() if c.element.path == f"{at}.{segment}"), None)
    if child is None:
        return False
    if child.element.children is not None:
        return _follows(*child.element.children, rest)
    kinds = child.element.types if segment.endswith("[x]") else (child.type,)
    return any(_follows(*_root(kind), rest) for kind in kinds)


def _root(kind: str) -> tuple[str, str]:
    if definitions.is_primitive(kind):
        return kind, kind
    return definitions.datatype_root(kind) if definitions.type_info(kind) is not None else ("Element", "Element")


def attachment_issues(node: dict[str, Any], where: str) -> list[Issue]:
    data = node.get("data")
    if type(data) is not str:
        return []
    try:
        content = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return []  # the walk reports the base64 itself
    issues = []
    size = node.get("size")
    if type(size) is int and size != len(content):
        issues.append(
            _error(f"{where}.size", f"Stated Attachment size {size} does not match the data's {len(content)}")
        )
    digest = node.get("hash")
    if type(digest) is str and digest != base64.b64encode(hashlib.sha1(content).digest()).decode():
        issues.append(_error(f"{where}.hash", "The stated hash is not the SHA-1 of the attachment's data"))
    return issues


RESOURCE_RULES: dict[str, Callable[[dict[str, Any], str], list[Issue]]] = {
    "SearchParameter": search_parameter_issues,
    "CapabilityStatement": capability_issues,
    "StructureDefinition": structure_definition_issues,
}
DATATYPE_RULES: dict[str, Callable[[dict[str, Any], str], list[Issue]]] = {"Attachment": attachment_issues}

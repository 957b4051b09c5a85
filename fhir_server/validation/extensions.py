"""Extensions against their definitions: the core extensions of R4 (``data/r4_extensions.json``, generated from the
specification's extension definitions) are checked for where they are used (``context``) and their value type.

Definitions come from R4 itself, from the SDC extensions the shipped measures use (``data/sdc_extensions.json``),
from the Subscriptions Backport's that topic-based Subscriptions use (``data/backport_extensions.json``) and from
the extension StructureDefinitions stored on the server (``fhir-server load`` of an implementation guide, or a
POST), which the caller's ``lookup`` finds.  An extension under HL7's namespace (``http://hl7.org/fhir/``,
the specification's and its implementation guides') that none of these defines is refused, as HL7's validator
does.  An extension of any other namespace is accepted with an informational issue: EHRs send their own (Epic's,
Cerner's, a national profile's), and a server that refused them would refuse their records — HAPI FHIR's validator
allows any extension by default for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server.errors import Issue

CORE = "http://hl7.org/fhir/StructureDefinition/"
HL7 = "http://hl7.org/fhir/"
# R4 §2.3.1.2 / FHIR cross-version extensions: an element of another version carried as an extension, defined by
# its URL alone (http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property).
CROSS_VERSION = re.compile(r"http://hl7\.org/fhir/[0-9.]+/StructureDefinition/extension-[A-Za-z.\[\]]+")
# Conformance resources: what an implementation guide's package holds, annotated by HL7's publishing tools.
DEFINITIONAL = frozenset(
    {
        "StructureDefinition", "ImplementationGuide", "CapabilityStatement", "CodeSystem", "ValueSet", "ConceptMap",
        "NamingSystem", "SearchParameter", "OperationDefinition", "CompartmentDefinition", "StructureMap",
        "GraphDefinition", "MessageDefinition", "TerminologyCapabilities",
    }
)  # fmt: skip
Lookup = Callable[[str], dict[str, Any] | None]
FHIR_TYPE = CORE + "structuredefinition-fhir-type"
# Contexts that any element matches (R4 extension contexts name a type or an element path).
_ANYWHERE = frozenset({"Element", "Base"})
# Where the R4 definitions themselves use a core extension outside the context it declares (every snapshot's
# ElementDefinition.type carries structuredefinition-fhir-type and regex; later versions of these extensions
# declare it): refusing those would refuse the specification's own StructureDefinitions.
_CONTEXT_ERRATA = {
    CORE + "structuredefinition-fhir-type": ("ElementDefinition.type",),
    CORE + "regex": ("ElementDefinition.type",),
    # declared for StructureDefinition; the specification puts it on its CodeSystems, OperationDefinitions... and
    # on the root ElementDefinition of its normative types
    CORE + "structuredefinition-normative-version": ("Resource", "ElementDefinition"),
}


@cache
def _definitions() -> dict[str, Any]:
    folder = resources.files("fhir_server.validation").joinpath("data")
    out = orjson.loads(folder.joinpath("r4_extensions.json").read_bytes())
    for shipped in ("sdc_extensions.json", "backport_extensions.json"):
        out.update({k: v for k, v in orjson.loads(folder.joinpath(shipped).read_bytes()).items() if k[0] != "_"})
    return out


def definition(url: str, lookup: Lookup | None = None) -> dict[str, Any] | None:
    """The compact definition of extension ``url``: shipped, else a stored StructureDefinition's (``lookup``)."""
    found = _definitions().get(url)
    if found is None and lookup is not None:
        stored = lookup(url)
        if stored is not None and stored.get("type") == "Extension":
            found = compact(stored)
    return found


def compact(structure: dict[str, Any]) -> dict[str, Any]:
    """An extension StructureDefinition (with a snapshot) as this module reads it: context, value types, and the
    value types of the sub-extensions of a complex extension."""
    elements = (structure.get("snapshot") or structure.get("differential") or {}).get("element") or []
    entry: dict[str, Any] = {
        "context": [[c.get("type"), c.get("expression")] for c in structure.get("context") or ()],
        "value": _value_types(elements, "Extension"),
    }
    children = {}
    for element in elements:
        if element.get("path") == "Extension.extension.url" and element.get("fixedUri"):
            prefix = element["id"].rsplit(".url", 1)[0]
            children[element["fixedUri"]] = _value_types(elements, prefix, by_id=True)
    if children:
        entry["extensions"] = children
    return entry


def _value_types(elements: list[dict[str, Any]], prefix: str, by_id: bool = False) -> list[str]:
    """The value types allowed at ``prefix.value[x]``; [] when value[x] is prohibited (a complex extension)."""
    for element in elements:
        where = element.get("id") if by_id else element.get("path")
        if where == f"{prefix}.value[x]":
            if element.get("max") == "0":
                return []
            return [_type_code(entry) for entry in element.get("type", ())]
    return []


def _type_code(entry: dict[str, Any]) -> str:
    for extension in entry.get("extension", ()):
        if extension.get("url") == FHIR_TYPE:
            return extension.get("valueUrl") or extension.get("valueUri") or entry["code"]
    return entry["code"]


def value_key(extension: dict[str, Any]) -> str | None:
    return next((key for key in extension if key.startswith("value")), None)


def extension_issues(
    extension: dict[str, Any],
    where: str,
    context: frozenset[str],
    parent_url: str | None,
    lookup: Lookup | None,
    resource_type: str = "",
) -> list[Issue]:
    """Issues of one extension object found at ``where``; ``context`` names the element that carries it (its type,
    its element path, ``Resource``/``DomainResource``/``BackboneElement`` where they apply); ``parent_url`` is the
    URL of the extension this one is nested in."""
    url = extension.get("url")
    if type(url) is not str:
        return []  # the structure walk reports the missing url
    if parent_url is not None:
        parent = definition(parent_url, lookup)
        if parent is not None and parent.get("extensions") is not None and "://" not in url:
            allowed = parent["extensions"].get(url)
            if allowed is None:
                return [_error(where, f"The extension {url} is not allowed inside {parent_url}")]
            return _value_issues(extension, where, url, allowed)
        if "://" not in url:
            return []  # a sub-extension of an extension we do not know: its definition would say
    found = definition(url, lookup)
    if found is None:
        if CROSS_VERSION.match(url):
            return [_information(where, f"{url} is a cross-version extension (an element of another FHIR version)")]
        if url.startswith(HL7):
            message = f"The extension {url} could not be found so is not allowed here"
            if resource_type in DEFINITIONAL:
                # HL7's publishing tools put their own extensions (tools, the extensions pack) on every definition
                # of an implementation guide; refusing them would refuse the guide (fhir-server load)
                return [Issue("structure", f"{where}: {message} (a warning on a definition)", severity="warning",
                              expression=[where])]  # fmt: skip
            return [_error(where, message)]
        return [_information(where, f"the extension {url} is not known to this server; its content is not validated")]
    issues: list[Issue] = []
    contexts = found["context"] + [["element", extra] for extra in _CONTEXT_ERRATA.get(url, ())]
    if not _in_context(contexts, context, parent_url):
        shown = ", ".join(expression for _, expression in found["context"])
        issues.append(_error(where, f"The extension {url} is not allowed to be used here (allowed: {shown})"))
    issues += _value_issues(extension, where, url, found["value"])
    return issues


def _in_context(contexts: list[list[str]], here: frozenset[str], parent_url: str | None) -> bool:
    if not contexts:
        return True
    for kind, expression in contexts:
        if kind == "element" and (expression in _ANYWHERE or expression in here):
            return True
        if kind == "extension" and parent_url is not None and expression == parent_url:
            return True
        if kind == "fhirpath":  # a FHIRPath context is not judged here
            return True
    return False


def _value_issues(extension: dict[str, Any], where: str, url: str, allowed: list[str]) -> list[Issue]:
    key = value_key(extension)
    if key is None:
        return []
    if not allowed:
        return [_error(where, f"The extension {url} is a complex extension and has no value[x] ({key} found)")]
    kind = key[5:]
    if not any(kind == a[0].upper() + a[1:] for a in allowed):
        return [_error(f"{where}.{key}", f"The extension {url} does not allow a value of type {kind} ({allowed})")]
    return []


def _information(where: str, message: str) -> Issue:
    return Issue("informational", f"{where}: {message}", severity="information", expression=[where])


def _error(where: str, message: str) -> Issue:
    return Issue("structure", f"{where}: {message}", expression=[where])

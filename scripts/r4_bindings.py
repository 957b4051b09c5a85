"""The required bindings of fhir_server/validation/data/required_bindings.json, from the R4 definitions (r4_data.py
loads them): for each element of the checked types bound with strength ``required``, its value set and the codes
that value set holds, from the specification's own code systems.  A value set over a terminology the specification
does not define (mime types, currencies) cannot be listed: it is named under ``_skipped`` with the reason, and the
element is not checked.
"""

from __future__ import annotations

from typing import Any, Protocol

# The resource types whose required bindings the server checks: its own (the measures' Questionnaires, responses,
# Observations, Flags, Provenance, Tasks, terminology) and what its flows exchange with an EHR.  A type's codes are
# checked only once it is listed here and the file is regenerated.  Every complex datatype's are (bar
# ElementDefinition, which only StructureDefinition uses).
RESOURCE_TYPES = (
    "AuditEvent",
    "Bundle",
    "CareTeam",
    "CodeSystem",
    "ConceptMap",
    "Device",
    "Encounter",
    "EpisodeOfCare",
    "Flag",
    "Group",
    "Observation",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "Subscription",
    "Task",
    "ValueSet",
)
DATATYPES_LEFT_OUT = ("ElementDefinition",)
NOT_SELECTABLE = "notSelectable"


class Definitions(Protocol):
    def of_type(self, resource_type: str) -> list[dict[str, Any]]: ...

    def get(self, resource_type: str, url: str) -> dict[str, Any] | None: ...


class External(Exception):
    """A value set whose codes come from a terminology outside the specification."""


def _checked(definition: dict[str, Any]) -> bool:
    if definition.get("derivation") != "specialization":
        return False
    if definition.get("kind") == "resource":
        return definition["name"] in RESOURCE_TYPES
    return definition.get("kind") == "complex-type" and definition["name"] not in DATATYPES_LEFT_OUT


def _concepts(concepts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A code system's concepts, depth first (a hierarchy's children after their parent)."""
    out = []
    for concept in concepts:
        out.append(concept)
        out.extend(_concepts(concept.get("concept", [])))
    return out


def _not_selectable(concept: dict[str, Any]) -> bool:
    return any(p.get("code") == NOT_SELECTABLE and p.get("valueBoolean") for p in concept.get("property", ()))


def _system(definitions: Definitions, url: str) -> dict[str, Any]:
    system = definitions.get("CodeSystem", url)
    if system is None or system.get("content") not in ("complete", None):
        raise External(f"code system {url} not defined in the R4 spec bundles (external terminology)")
    return system


def expand(definitions: Definitions, url: str) -> tuple[list[str], list[str]]:
    """The codes of value set ``url`` in the order the definitions give them, and those marked notSelectable."""
    pairs, abstract = expand_pairs(definitions, url)
    return _unique(code for _, code in pairs), _unique(code for _, code in abstract)


def expand_pairs(definitions: Definitions, url: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (system, code) pairs of value set ``url``, and those marked notSelectable."""
    value_set = definitions.get("ValueSet", url)
    if value_set is None:
        raise External(f"value set {url} not defined in the R4 spec bundles")
    codes: list[tuple[str, str]] = []
    abstract: list[tuple[str, str]] = []
    for include in value_set.get("compose", {}).get("include", ()):
        for nested in include.get("valueSet", ()):
            more, more_abstract = expand_pairs(definitions, nested)
            codes += more
            abstract += more_abstract
        if "system" not in include:
            continue
        if include.get("filter"):
            raise External(f"value set {url} selects codes of {include['system']} by a filter")
        if "concept" in include:  # listed in the value set: the system may be external (units-of-time: UCUM)
            system = definitions.get("CodeSystem", include["system"]) or {}
        else:
            system = _system(definitions, include["system"])
        by_code = {concept["code"]: concept for concept in _concepts(system.get("concept", []))}
        chosen = [c["code"] for c in include["concept"]] if "concept" in include else list(by_code)
        codes += [(include["system"], code) for code in chosen]
        abstract += [(include["system"], c) for c in chosen if c in by_code and _not_selectable(by_code[c])]
    excluded = {
        (exclude.get("system"), c["code"])
        for exclude in value_set.get("compose", {}).get("exclude", ())
        for c in exclude.get("concept", ())
    }
    return _unique(pair for pair in codes if pair not in excluded), _unique(abstract)


def _unique(codes: Any) -> list[str]:
    return list(dict.fromkeys(codes))


def required_bindings(definitions: Definitions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for definition in definitions.of_type("StructureDefinition"):
        if not _checked(definition):
            continue
        for element in definition.get("snapshot", {}).get("element", ()):
            binding = element.get("binding") or {}
            if binding.get("strength") != "required" or element["path"] in out or element["path"] in skipped:
                continue
            value_set = binding["valueSet"].split("|")[0]
            try:
                codes, abstract = expand(definitions, value_set)
            except External as reason:
                skipped[element["path"]] = {"valueSet": value_set, "reason": str(reason)}
                continue
            out[element["path"]] = {"valueSet": value_set, "codes": codes}
            if abstract:
                out[element["path"]][NOT_SELECTABLE] = abstract
    result = {path: out[path] for path in sorted(out)}
    if skipped:
        result["_skipped"] = {path: skipped[path] for path in sorted(skipped)}
    return result

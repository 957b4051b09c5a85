"""Value set expansion from the R4 definitions, for r4_structures.py's ``r4_valuesets.json``: the (system, code)
pairs a value set holds, from the specification's own code systems.  A value set over a terminology the
specification does not define (mime types, currencies, SNOMED CT by a filter) cannot be listed: ``External`` says
why, and the value set is named under ``_external`` (a terminology server may judge it).
"""

from __future__ import annotations

from typing import Any, Protocol

NOT_SELECTABLE = "notSelectable"


class Definitions(Protocol):
    def of_type(self, resource_type: str) -> list[dict[str, Any]]: ...

    def get(self, resource_type: str, url: str) -> dict[str, Any] | None: ...


class External(Exception):
    """A value set whose codes come from a terminology outside the specification."""


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

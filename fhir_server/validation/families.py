"""The validator's rule families: every issue it raises belongs to one (``Issue.rule``).

A site may turn the errors of some families into warnings (``FHIR_SERVER_VALIDATION_WARN_ONLY``, comma separated)
— a feed whose sender uses its own codes in required bindings, or whose Bundles break the document rules, can then
still be stored, with the issues returned by ``$validate``.  The families that keep the data readable and safe
cannot be downgraded: the JSON structure (unknown elements, wrong JSON types, cardinality, primitive formats) and
the narrative's XHTML (which is shown in browsers; a script in it is an attack, not a style).
"""

from __future__ import annotations

from fhir_server.errors import Issue

FAMILIES: dict[str, str] = {
    "structure": "elements, cardinality, JSON types and formats of primitives, resource ids",
    "narrative": "the narrative's XHTML (txt-1, txt-2, no scripts or active content)",
    "binding": "codes outside a required binding's value set",
    "invariant": "the FHIRPath invariants of the R4 definitions",
    "extension": "extensions unknown under HL7's namespace, used out of context or with the wrong value type",
    "reference": "Reference targets of the wrong type, '#id' references that resolve to nothing, element ids",
    "bundle": "Bundle rules: fullUrl, links, references inside documents and messages, search results",
    "profile": "the profiles a resource claims or $validate names, and the vital signs profiles R4 requires",
    "definition": "definition resources against the core (SearchParameter, CapabilityStatement, StructureDefinition) "
    "and an Attachment's size and hash",
}
NOT_DOWNGRADABLE = frozenset({"structure", "narrative"})


def parse_warn_only(value: str) -> frozenset[str]:
    """``FHIR_SERVER_VALIDATION_WARN_ONLY`` → the families; a name that is not one (or may not be downgraded) is
    an error that names it."""
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(names - set(FAMILIES))
    if unknown:
        raise ValueError(
            f"FHIR_SERVER_VALIDATION_WARN_ONLY: unknown rule famil{'ies' if len(unknown) > 1 else 'y'} "
            f"{', '.join(unknown)} (known: {', '.join(sorted(set(FAMILIES) - NOT_DOWNGRADABLE))})"
        )
    fixed = sorted(names & NOT_DOWNGRADABLE)
    if fixed:
        raise ValueError(f"FHIR_SERVER_VALIDATION_WARN_ONLY: {', '.join(fixed)} cannot be downgraded to warnings")
    return names


def downgrade(issues: list[Issue], families: frozenset[str]) -> None:
    """Errors of the given families become warnings (in place), saying so."""
    for issue in issues:
        if issue.severity == "error" and (issue.rule or "structure") in families:
            issue.severity = "warning"
            issue.diagnostics += f" (an error, downgraded to a warning by this site's setting for '{issue.rule}')"

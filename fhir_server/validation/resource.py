"""Validation of one resource against FHIR R4: the one validator behind every write (create, update, PATCH
results, transaction and batch entries) and ``$validate``.

The checks, in order: the structure walk (``structure.py``: elements, cardinality, JSON types and formats of
primitives, bindings, Reference targets, extensions, narrative), the invariants of the R4 definitions whose context
is present (``invariants.py``), references inside the resource (``local_refs.py``) and the rules of Bundles
(``bundles.py``).  Errors refuse a write; warnings and information are returned by ``$validate`` and never refuse.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import fhir_server.validation.definitions as definitions
import fhir_server.validation.invariants as invariants
from fhir_server import models
from fhir_server.errors import FhirError, Issue
from fhir_server.validation.bundles import bundle_issues
from fhir_server.validation.claims import claimed_profile_issues
from fhir_server.validation.conformance import RESOURCE_RULES
from fhir_server.validation.extensions import Lookup
from fhir_server.validation.families import downgrade
from fhir_server.validation.local_refs import LocalRefs, local_ref_issues
from fhir_server.validation.structure import MAX_ISSUES, Walk, walk_resource
from fhir_server.validation.terminology import RemoteTerminology

log = logging.getLogger("fhir_server.validation")
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ORDER = {"fatal": 0, "error": 1, "warning": 2, "information": 3}


@dataclass(frozen=True, slots=True)
class Services:
    """What the validator may consult beyond the R4 tables, and how this site wants it."""

    lookup: Lookup | None = None  # a stored StructureDefinition by canonical URL (extensions, profiles)
    warn_only: frozenset[str] = frozenset()  # rule families whose errors are warnings here (families.py)
    terminology: RemoteTerminology | None = None  # FHIR_SERVER_TERMINOLOGY_URL


NO_SERVICES = Services()


@dataclass(frozen=True, slots=True)
class Report:
    resource_type: str
    issues: list[Issue]

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity in ("error", "fatal")]


def check_id(resource_id: str, where: str = "id") -> None:
    if not ID_PATTERN.fullmatch(resource_id):
        raise FhirError(
            400,
            "value",
            f"Invalid id '{resource_id[:80]}': ids are 1-64 of [A-Za-z0-9-.]",
            expression=[where],
        )


def check(
    resource: Any, expected_type: str | None = None, services: Services = NO_SERVICES, profile: str | None = None
) -> Report:
    """Every issue of ``resource``, errors first.  Raises FhirError only when it is not a resource at all.
    ``profile`` is one more profile to validate against (``$validate?profile=``)."""
    resource_type = _resource_type(resource, expected_type)
    lookup = services.lookup
    walk = Walk(lookup=lookup, terminology=services.terminology, refs=LocalRefs())
    walk_resource(resource, resource_type, walk)
    issues = walk.issues
    for node, where in walk.resources:
        issues += _resource_issues(node, where)
    # The walk fed the local-reference rules as it went, unless the resource's errors made it leave the typed walk
    refs = walk.refs.issues if walk.refs is not None else local_ref_issues(resource, resource_type)
    issues += _family(refs, "reference")
    if any(node.get("resourceType") == "Bundle" for node, _ in walk.resources):
        issues += _family(bundle_issues(resource, resource_type), "bundle")
    # FHIRPath over a resource whose structure is wrong judges nothing useful (and names elements that are not there)
    if not any(issue.severity == "error" and issue.rule == "structure" for issue in issues):
        issues += _invariant_issues(walk)
        issues += _family(claimed_profile_issues(walk.resources, lookup, profile), "profile")
    downgrade(issues, services.warn_only)
    issues.sort(key=lambda issue: _ORDER.get(issue.severity, 4))
    return Report(resource_type, issues[:MAX_ISSUES])


def validate_resource(resource: Any, expected_type: str | None = None, services: Services = NO_SERVICES) -> str:
    """Validate a parsed JSON resource; return its type.  Raises FhirError (400) with every issue when one is an
    error; warnings alone do not refuse."""
    report = check(resource, expected_type, services)
    errors = report.errors
    if errors:
        raise FhirError(400, errors[0].code, errors[0].diagnostics, issues=report.issues)
    return report.resource_type


def _resource_type(resource: Any, expected_type: str | None) -> str:
    if not isinstance(resource, dict):
        raise FhirError(400, "structure", "The body must be a JSON object holding a FHIR resource")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError(400, "structure", "The resource has no 'resourceType'", expression=["resourceType"])
    if not models.is_resource_type(resource_type):
        if definitions.is_resource(resource_type):
            raise FhirError(400, "not-supported", f"Resource type '{resource_type}' is not served by this server")
        raise FhirError(400, "not-supported", f"Unknown resource type '{resource_type[:64]}'")
    if expected_type is not None and resource_type != expected_type:
        raise FhirError(400, "invalid", f"Resource type '{resource_type}' does not match the URL's '{expected_type}'")
    return resource_type


def _family(issues: list[Issue], rule: str) -> list[Issue]:
    for issue in issues:
        issue.rule = issue.rule or rule
    return issues


def _resource_issues(node: dict[str, Any], where: str) -> list[Issue]:
    issues: list[Issue] = []
    resource_id = node.get("id")
    if "id" in node and (type(resource_id) is not str or not ID_PATTERN.fullmatch(resource_id)):
        shown = str(resource_id)[:80]
        reason = "Too long" if type(resource_id) is str and len(resource_id) > 64 else "ids are 1-64 of [A-Za-z0-9-.]"
        issues.append(
            Issue("value", f"{where}.id: Invalid Resource id '{shown}': {reason}", expression=[f"{where}.id"])
        )
    rule = RESOURCE_RULES.get(node.get("resourceType", ""))
    if rule is not None:
        issues += _family(rule(node, where), "definition")
    return issues


def _invariant_issues(walk: Walk) -> list[Issue]:
    issues = []
    for item in walk.deferred:
        if item.key.startswith("txt-"):
            continue  # the narrative's rules: judged on the XHTML by the walk (narrative.py)
        held = invariants.holds(item.key, item.node, item.resource, item.root)
        if held is False:
            invariant = invariants.constraint(item.key)
            severity = "error" if invariant.severity == "error" else "warning"
            key = item.key.split("@")[0]
            issues.append(
                Issue(
                    "invariant",
                    f"{item.where}: Constraint failed: {key}: '{invariant.human}'",
                    severity=severity,
                    expression=[item.where],
                    rule="invariant",
                )
            )
    return issues

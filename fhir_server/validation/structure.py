"""The structure walk: one pass over a resource's JSON against the R4 definitions (``definitions.py``).

It checks what the StructureDefinitions say of each node — known elements, array or single value, cardinality,
the JSON type and lexical form of every primitive, required and extensible bindings, Reference targets, core
extensions, the narrative's XHTML, contained and nested resources — and collects the invariants whose context is
present, with their node, for ``invariants.py`` to judge afterwards.  ele-1 (no empty elements) is checked here:
FHIR JSON may not hold empty objects, arrays or strings (R4 §2.6.2).  It also feeds ``local_refs.LocalRefs`` the
nodes its rules read (ids, ``#`` references, nested resources), so the resource is walked once, not twice.

Each issue names the node by FHIRPath (``QuestionnaireResponse.item[0].answer[0].valueInteger``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fhir_server.validation.definitions as definitions
from fhir_server.errors import Issue
from fhir_server.validation.bindings import binding_issues, coding_issues
from fhir_server.validation.conformance import DATATYPE_RULES
from fhir_server.validation.definitions import Child
from fhir_server.validation.extensions import Lookup, extension_issues
from fhir_server.validation.formats import reference_problem
from fhir_server.validation.local_refs import LocalRefs
from fhir_server.validation.narrative import narrative_problems
from fhir_server.validation.primitives import absolute_uri_problem, json_type_problem, uuid_problem, value_problem
from fhir_server.validation.terminology import RemoteTerminology

MAX_ISSUES = 50
ID_ELEMENTS = frozenset({"Resource.id"})
# Elements whose uri must be absolute (HL7's validator: "must be an absolute reference, not a local reference").
ABSOLUTE_SYSTEMS = frozenset({"Coding.system", "Identifier.system", "Quantity.system"})


@dataclass(slots=True)
class Deferred:
    key: str
    node: Any
    resource: dict[str, Any]
    root: dict[str, Any]
    where: str


@dataclass(slots=True)
class Walk:
    issues: list[Issue] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    resources: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # every resource and where it is
    lookup: Lookup | None = None  # stored StructureDefinitions by canonical URL (extension definitions, profiles)
    terminology: RemoteTerminology | None = None  # codes of systems and value sets the server does not hold
    # The local-reference rules, fed as the walk goes.  They are exact only while the walk visits the nodes, in the
    # order and under the paths, of local_refs.nodes() (the R4 types, as written): on a resource with errors it
    # skips or reshapes parts (an empty array, an object where a string belongs) and stops after MAX_ISSUES.
    # Wherever it may have, ``refs`` is dropped (None) and the caller runs local_refs' own walk instead.
    refs: LocalRefs | None = None

    def add(self, code: str, where: str, message: str, severity: str = "error", rule: str = "structure") -> None:
        self.issues.append(Issue(code, f"{where}: {message}", severity=severity, expression=[where], rule=rule))
        if severity == "error":
            # Every departure from the typed walk is an error; the few that are not drop ``refs`` where they happen
            # (MAX_ISSUES reached, a resourceType in a datatype's object, a datatype profile's own table).
            self.refs = None

    def extend(self, issues: list[Issue], rule: str) -> None:
        for issue in issues:
            issue.rule = issue.rule or rule
        self.issues.extend(issues)


def walk_resource(
    node: dict[str, Any],
    where: str,
    walk: Walk,
    root: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> None:
    """Walk a resource found at ``where`` (the top level, contained, a Bundle entry, a Parameters value);
    ``container``: the resource whose ``contained`` holds it."""
    resource_type = node.get("resourceType")
    if type(resource_type) is not str:
        walk.add("structure", where, "a resource needs a 'resourceType'")
        return
    if not definitions.is_resource(resource_type):
        walk.add("not-supported", where, f"'{resource_type[:64]}' is not a FHIR R4 resource type")
        return
    walk.resources.append((node, where))
    root = root if root is not None else node
    for key in definitions.node_constraints(resource_type, resource_type):
        walk.deferred.append(Deferred(key, node, node, root, where))
    if walk.refs is not None:
        walk.refs.enter(node, where, container)
    _walk_node(node, resource_type, resource_type, where, walk, node, root, _resource_context(resource_type))
    if walk.refs is not None:
        walk.refs.leave()


def _resource_context(resource_type: str) -> frozenset[str]:
    info = definitions.type_info(resource_type) or {}
    names = {resource_type, "Resource"}
    if info.get("base", "").endswith("DomainResource"):
        names.add("DomainResource")
    return frozenset(names)


def _walk_node(
    node: dict[str, Any],
    owner: str,
    path: str,
    where: str,
    walk: Walk,
    resource: dict[str, Any],
    root: dict[str, Any],
    context: frozenset[str],
    parent_extension: str | None = None,
) -> None:
    table = definitions.children(owner, path)
    for key, value in node.items():
        if len(walk.issues) >= MAX_ISSUES:
            walk.refs = None
            return
        child = table.get(key)
        if child is None:
            if key != "resourceType" or path != owner:
                walk.add("structure", f"{where}.{key}", f"Unrecognized element '{key[:64]}' (not part of FHIR R4)")
            elif not definitions.is_resource(owner):
                walk.refs = None  # a datatype's object with a resourceType: local_refs.nodes() takes it for a resource
            continue
        here = f"{where}.{key}"
        if isinstance(value, (list, dict, str)) and not value:
            walk.add("value" if value == "" else "structure", here, "empty values are not allowed in FHIR JSON")
            continue
        if key[0] == "_":
            _walk_primitive_twins(value, child, here, walk, resource, root, node.get(key[1:]))
            continue
        if child.element.repeats:
            empty = [i for i, item in enumerate(value) if item == {} or item == ""] if type(value) is list else []
            if empty:
                walk.add("structure", f"{here}[{empty[0]}]", "empty values are not allowed in FHIR JSON")
                continue
            if type(value) is not list:
                walk.add("structure", here, "this element repeats: its value must be a JSON array")
                value = [value]
            elif child.element.max is not None and len(value) > child.element.max:
                walk.add("structure", here, f"at most {child.element.max} allowed, found {len(value)}")
            twins = node.get("_" + key)
            twins = twins if type(twins) is list else None
            for index, item in enumerate(value):
                if item is None:
                    if twins is None or index >= len(twins) or twins[index] is None:
                        walk.add("structure", f"{here}[{index}]", "null is allowed only beside an extension")
                    continue
                _check_value(child, item, f"{here}[{index}]", walk, resource, root, context, parent_extension)
        elif type(value) is list:
            walk.add("structure", here, "this element does not repeat: its value must not be a JSON array")
        else:
            _check_value(child, value, here, walk, resource, root, context, parent_extension)
    _check_required(node, owner, path, where, walk)
    if node.keys() <= {"id"} and (path != owner or not definitions.is_resource(owner)):
        walk.add("invariant", where, "ele-1: All FHIR elements must have a @value or children")


def _check_required(node: dict[str, Any], owner: str, path: str, where: str, walk: Walk) -> None:
    for element, keys in definitions.required(owner, path):
        if not any(key in node or f"_{key}" in node for key in keys):
            name = element.path.rsplit(".", 1)[-1]
            walk.add("required", f"{where}.{name}", f"minimum required = {element.min}, but only found 0")


def _walk_primitive_twins(
    value: Any,
    child: Child,
    where: str,
    walk: Walk,
    resource: dict[str, Any],
    root: dict[str, Any],
    primitive: Any,
) -> None:
    """``_birthDate`` beside ``birthDate``: the primitive's id and extensions (arrays aligned with the values)."""
    items = value if type(value) is list else [value]
    if child.element.repeats != (type(value) is list):
        walk.add("structure", where, "must be an array exactly when its primitive is one")
        return
    if type(value) is list and type(primitive) is list and len(primitive) != len(value):
        walk.add("structure", where, "must have as many entries as its primitive array")
    context = frozenset({child.type, child.element.path})
    for index, item in enumerate(items):
        here = f"{where}[{index}]" if type(value) is list else where
        if item is None:
            continue
        if type(item) is not dict:
            walk.add("structure", here, "the extensions of a primitive are a JSON object")
            continue
        if walk.refs is not None:
            walk.refs.element(here, item, False)
        _walk_node(item, "Element", "Element", here, walk, resource, root, context)


def _check_value(
    child: Child,
    value: Any,
    where: str,
    walk: Walk,
    resource: dict[str, Any],
    root: dict[str, Any],
    context: frozenset[str],
    parent_extension: str | None,
) -> None:
    kind = child.type
    element = child.element
    if definitions.is_primitive(kind):
        _check_primitive(child, value, where, walk)
        if kind == "canonical" and walk.refs is not None:
            walk.refs.canonical(where, value)
    elif kind == "Resource" or definitions.is_resource(kind):
        if type(value) is not dict:
            walk.add("structure", where, "a resource must be a JSON object")
        elif element.path.endswith(".contained"):
            # A contained resource lives in its container (%rootResource); a Bundle entry or a Parameters value is
            # a resource of its own, as HL7's validator has it.
            walk_resource(value, where, walk, root, container=resource)
        else:
            walk_resource(value, where, walk)
        return
    elif type(value) is not dict:
        walk.add("structure", where, f"{kind} must be a JSON object, not {type(value).__name__}")
        return
    else:
        if walk.refs is not None:
            walk.refs.element(where, value, kind == "Reference")
        if element.children is not None:
            owner, path = element.children
            # a contentReference (CapabilityStatement.rest.operation) is named by its own path and its target's
            names = frozenset({"BackboneElement", "Element", path, element.path})
        else:
            profile = element.profile_for(kind)
            owner, path = definitions.datatype_root(profile or kind)
            if profile and not _same_table(profile, kind):
                walk.refs = None  # local_refs.nodes() reads the value with its own type's table
            names = definitions.context_names(kind, element.path)
            for key in definitions.node_constraints(owner, path):
                if key not in element.constraints:  # ext-1 is both the element's and the Extension type's
                    walk.deferred.append(Deferred(key, value, resource, root, where))
        if kind == "Extension":
            issues = extension_issues(
                value, where, context, parent_extension, walk.lookup, resource.get("resourceType", "")
            )
            walk.extend(issues, "extension")
            url = value.get("url") if type(value.get("url")) is str else None
            names = context  # an extension's own extensions are in the context of the extension
            _walk_node(value, owner, path, where, walk, resource, root, names, parent_extension=url)
        else:
            _walk_node(value, owner, path, where, walk, resource, root, names)
        if kind == "Reference":
            _check_reference_target(value, element.targets, where, walk)
        elif kind == "Coding" and walk.terminology is not None:
            walk.extend(coding_issues(value, where, walk.terminology), "binding")
        rule = DATATYPE_RULES.get(kind)
        if rule is not None:
            walk.extend(rule(value, where), "definition")
    for key in element.constraints:
        walk.deferred.append(Deferred(key, value, resource, root, where))
    if element.binding is not None:
        walk.extend(binding_issues(kind, value, element.binding, where, walk.terminology), "binding")


@cache
def _same_table(profile: str, kind: str) -> bool:
    """Whether a datatype profile's table (SimpleQuantity) types the keys as its value's own type does (Quantity)."""
    ours = definitions.children(*definitions.datatype_root(profile))
    theirs = definitions.children(*definitions.datatype_root(kind))
    return {k: c.type for k, c in ours.items()} == {k: c.type for k, c in theirs.items()}


def _check_primitive(child: Child, value: Any, where: str, walk: Walk) -> None:
    kind = child.type
    problem = json_type_problem(kind, value)
    if problem is not None:
        walk.add("value", where, problem)
        return
    if kind == "xhtml":
        for invariant, reason in narrative_problems(value):
            walk.add("invariant", where, f"{invariant}: {reason}", rule="narrative")
        return
    path = child.element.path
    if path == "Reference.reference":
        problem = reference_problem(value)
        if problem is None and value.startswith("urn:uuid:") and uuid_problem(value):
            walk.add(
                "value",
                where,
                "a urn:uuid: reference holds a lowercase UUID: this one resolves to nothing",
                severity="warning",
            )
    elif path in ABSOLUTE_SYSTEMS:
        problem = absolute_uri_problem(value)
    else:
        problem = value_problem(kind, value)
    if problem is not None:
        walk.add("value", where, problem)


def _check_reference_target(value: dict[str, Any], targets: frozenset[str], where: str, walk: Walk) -> None:
    reference = value.get("reference")
    if not targets or type(reference) is not str or reference.startswith(("#", "urn:")):
        return
    parts = reference.split("?")[0].split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        return
    resource_type = parts[-2]
    if definitions.is_resource(resource_type) and resource_type not in targets:
        allowed = ", ".join(sorted(targets))
        walk.add(
            "structure",
            f"{where}.reference",
            f"the type '{resource_type}' of {reference[:100]} is not a valid target here (allowed: {allowed})",
        )

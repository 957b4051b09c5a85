"""Validation of a resource against a profile: a constraint StructureDefinition with a snapshot.

The structure walk checks what the base R4 types say; this module checks what a profile adds (R4 profiling.html),
walking the resource's JSON (``profile_items.py``) with the profile's snapshot as a tree (``profile_tree.py``):

- cardinality, where the profile tightens the base's (an element's ``base.min``/``base.max`` say the base's; without
  them it is always checked), including ``max = 0``;
- types: a choice or a ``Resource`` element allowing fewer types, a Reference fewer targets (``targetProfile``);
- ``fixed[x]`` (exactly that value) and ``pattern[x]`` (the value contains it; ``profile_values.py`` compares);
- slicing: each repetition matched to a slice by the discriminators (``slicing.py``), each slice's cardinality and
  its own element definitions, ``rules`` closed / open / openAtEnd, ``ordered``;
- bindings a profile adds or changes, when the caller can expand the value set: ``required`` → error,
  ``extensible`` → warning;
- the profile's own invariants (the base types' are the structure walk's), with ``invariants.compiled``;
- type profiles (an element's ``type.profile``: SimpleQuantity, an extension's definition), recursively.

What the base types already say is the structure walk's to check, and is not said twice (``profile_base.py``).
Every issue names the element by FHIRPath (``Observation.component[1].code``) and the profile it comes from.
What cannot be judged (a profile or value set that cannot be read, a discriminator through ``resolve()``) is a
warning or nothing, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fhir_server.validation.extensions as extensions
import fhir_server.validation.invariants as invariants
from fhir_server.errors import Issue
from fhir_server.validation.profile_base import base_element, base_invariants, base_types, core_type, is_resource
from fhir_server.validation.profile_items import Item, children_named
from fhir_server.validation.profile_tree import Node, Snapshot, tree, type_code
from fhir_server.validation.profile_values import codes_shown, contains, equal, fixed_or_pattern, in_value_set, show
from fhir_server.validation.slicing import Unsupported, assign

Resolve = Callable[[str], dict[str, Any] | None]
Expand = Callable[[str], set[tuple[str, str]] | None]

# Type profiles can name profiles that name profiles; a resource bounds the depth, this bounds a cycle's cost.
MAX_DEPTH = 16
ANY_RESOURCE = frozenset({"Resource", "DomainResource"})
# Published profile invariants corrected before evaluation, as HL7's validator does (org.hl7.fhir.core,
# StructureDefinitionHacker): R4 vitalsigns' vs-1 fails every effectivePeriod (``as dateTime`` is empty on a Period,
# and an empty result fails), where it means "a dateTime is precise to the day".
_VS_1 = "($this as dateTime).toString().length() >= 8"
_CORRECTED = {("vs-1", _VS_1): "$this is dateTime implies $this.toString().length() >= 10"}
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def profile_issues(
    resource: dict[str, Any],
    profile: dict[str, Any],
    resolve: Resolve,
    expand: Expand | None = None,
) -> list[Issue]:
    """Where ``resource`` does not conform to ``profile``.

    ``resolve(url)`` gives another StructureDefinition (a type profile, an extension definition, a target profile)
    or None; ``expand(url)`` the (system, code) pairs of a value set, or None when it cannot (then the binding is
    not judged).  Both receive canonical URLs without their ``|version``.
    """
    url = profile.get("url", "(no url)")
    if not (profile.get("snapshot") or {}).get("element"):
        message = f"Profile {url} has no snapshot: generating one from its differential is not supported"
        return [Issue("not-supported", message, severity="error")]
    snapshot = tree(profile)
    kind = resource.get("resourceType")
    if snapshot.type != kind:
        message = f"Profile {url} is for {snapshot.type}, not {kind}"
        return [Issue("structure", message, expression=[str(kind)])]
    walker = _Walker(resolve, expand, resource)
    walker.check(snapshot.root, Item(resource, None, str(kind), str(kind)))
    return list({(i.code, i.severity, i.diagnostics, tuple(i.expression)): i for i in walker.issues}.values())


class _Walker:
    """One validation: the issues so far, and what it has looked up (profiles, value sets) on the way."""

    def __init__(self, resolve: Resolve, expand: Expand | None, resource: dict[str, Any], depth: int = 0) -> None:
        self.resolve, self.expand, self.resource, self.depth = resolve, expand, resource, depth
        self.issues: list[Issue] = []
        self.snapshots: dict[str, Snapshot | None] = {}
        self.value_sets: dict[str, set[tuple[str, str]] | None] = {}
        self.judged: set[tuple[str, str]] = set()  # (invariant, where): a slice repeats its element's invariants

    # slicing.Context

    def snapshot(self, url: str) -> Snapshot | None:
        url = url.split("|", 1)[0]
        if url not in self.snapshots:
            definition = self.resolve(url)
            has_snapshot = isinstance(definition, dict) and (definition.get("snapshot") or {}).get("element")
            self.snapshots[url] = tree(definition) if has_snapshot else None  # type: ignore[arg-type]
        return self.snapshots[url]

    def conforms(self, snapshot: Snapshot, item: Item) -> bool:
        sub = self._sub(item)
        if sub is None:
            return False
        sub.check(snapshot.root, item)
        return not any(issue.severity == "error" for issue in sub.issues)

    def codes(self, value_set: str) -> set[tuple[str, str]] | None:
        value_set = value_set.split("|", 1)[0]
        if value_set not in self.value_sets:
            self.value_sets[value_set] = self.expand(value_set) if self.expand is not None else None
        return self.value_sets[value_set]

    def _sub(self, item: Item) -> _Walker | None:
        if self.depth >= MAX_DEPTH:
            return None
        resource = item.value if item.type and is_resource(item.type) and type(item.value) is dict else self.resource
        sub = _Walker(self.resolve, self.expand, resource, self.depth + 1)
        sub.snapshots, sub.value_sets = self.snapshots, self.value_sets
        return sub

    # The walk

    def check(self, node: Node, item: Item) -> None:
        """Everything ``node`` says about one value (its type has been checked by the caller)."""
        self._value(node, item)
        self._binding(node, item)
        self._reference(node, item)
        self._invariants(node, item)
        self._type_profiles(node, item)
        for child in node.kids():
            self._child(child, item)

    def _child(self, child: Node, parent: Item) -> None:
        types = child.types()
        items = children_named(parent.node, child.name, parent.where, types[0] if len(types) == 1 else None)
        where = f"{parent.where}.{child.name.removesuffix('[x]')}"
        self._cardinality(child, items, where)
        items = [item for item in items if self._type_allowed(child, item)]
        for item in items:
            self.check(child, item)
        if "slicing" in child.element:
            self._slicing(child, items, where)

    def _cardinality(self, node: Node, items: list[Item], where: str) -> None:
        element, base = node.element, node.element.get("base") or {}
        sliced = node.element.get("sliceName")
        if (
            not sliced
            and base
            and str(base.get("min")) == str(element.get("min"))
            and base.get("max") == element.get("max")
        ):
            return  # the base's own cardinality: the structure walk's to check
        if items:
            where = items[0].where.rsplit("[", 1)[0] if items[0].where.endswith("]") else items[0].where
        what = f"{where}: slice '{sliced}':" if sliced else f"{where}:"
        if len(items) < node.min:
            message = f"{what} minimum required = {node.min}, but only found {len(items)}"
            self._error("required", message, node, where)
        if node.max is not None and len(items) > node.max:
            message = f"{what} max allowed = {node.max}, but found {len(items)}"
            self._error("structure", message, node, where)

    def _type_allowed(self, node: Node, item: Item) -> bool:
        allowed = set(node.types())
        if not allowed or item.type is None or item.type in allowed or allowed & ANY_RESOURCE:
            return True
        if allowed <= {"BackboneElement", "Element"}:
            return True
        base = base_types(node)
        if base is not None and item.type not in base and not base & ANY_RESOURCE:
            return False  # not a type the base allows either: the structure walk says so
        message = f"{item.where}: type {item.type} is not allowed here, only {', '.join(node.types())}"
        self._error("structure", message, node, item.where)
        return False

    def _value(self, node: Node, item: Item) -> None:
        expected = fixed_or_pattern(node.element)
        if expected is None:
            return
        how, value = expected
        if how == "fixed" and not equal(item.value, value):
            message = f"{item.where}: value must be exactly {show(value)}, found {show(item.value)}"
            self._error("value", message, node, item.where)
        elif how == "pattern" and not contains(item.value, value):
            message = f"{item.where}: value must match the pattern {show(value)}, found {show(item.value)}"
            self._error("value", message, node, item.where)

    def _binding(self, node: Node, item: Item) -> None:
        binding = node.element.get("binding") or {}
        strength, value_set = binding.get("strength"), (binding.get("valueSet") or "").split("|", 1)[0]
        if strength not in ("required", "extensible") or not value_set or self.expand is None:
            return
        base = (base_element(node) or {}).get("binding") or {}
        if base.get("valueSet") == value_set and base.get("strength") == strength:
            return  # the base's own binding: the structure walk's to check
        pairs = self.codes(value_set)
        if pairs is None:
            return
        verdict = in_value_set(item.value, pairs, strength)
        if verdict is False:
            found = codes_shown(item.value)
            if strength == "required":
                message = f"{item.where}: {found} is not in the value set {value_set} (required binding)"
                self._error("code-invalid", message, node, item.where)
            else:
                message = f"{item.where}: {found} is not in the value set {value_set} (extensible binding)"
                self._error("code-invalid", message, node, item.where, severity="warning")

    def _reference(self, node: Node, item: Item) -> None:
        if item.type != "Reference" or type(item.value) is not dict:
            return
        urls = [
            url
            for entry in node.element.get("type", ())
            if type_code(entry) == "Reference"
            for url in entry.get("targetProfile", ())
        ]
        allowed: set[str] = set()
        for url in urls:
            name = core_type(url)
            if name is None:
                target = self.snapshot(url)
                if target is None:
                    return  # a target profile that cannot be read: the targets cannot be judged
                name = target.type
            allowed.add(name)
        if not allowed or allowed & ANY_RESOURCE:
            return
        base = {
            t
            for entry in (base_element(node) or {}).get("type", ())
            if entry["code"] == "Reference"
            for t in entry.get("targets", ())
        }
        if base and base <= allowed:
            return  # the base's own targets: the structure walk's to check
        target_type = self._target_type(item.value)
        if target_type is not None and target_type not in allowed:
            message = (
                f"{item.where}: a reference to {target_type} is not allowed here, only to {', '.join(sorted(allowed))}"
            )
            self._error("structure", message, node, item.where)

    def _target_type(self, reference: dict[str, Any]) -> str | None:
        value = reference.get("reference")
        if type(value) is str and value.startswith("#"):
            contained = self.resource.get("contained")
            for resource in contained if type(contained) is list else ():
                if type(resource) is dict and resource.get("id") == value[1:]:
                    return resource.get("resourceType")
            return None
        match = _REFERENCE.search(value) if type(value) is str else None
        if match and is_resource(match.group(1)):
            return match.group(1)
        declared = reference.get("type")
        return declared if type(declared) is str and is_resource(declared) else None

    def _invariants(self, node: Node, item: Item) -> None:
        for constraint in node.element.get("constraint", ()):
            key, expression = constraint.get("key", "?"), constraint.get("expression")
            if not expression or expression in base_invariants().get(key, ()) or (key, item.where) in self.judged:
                continue
            self.judged.add((key, item.where))
            expression = _CORRECTED.get((key, expression), expression)
            try:
                # Typed, or FHIRPath would not know that value is valueQuantity, nor what $this as dateTime is.
                program = invariants.compiled(expression, _context_type(node, item), key)
                verdict = program(item.value, self.resource, None)
            except Exception as error:  # an expression FHIRPath cannot run here is not the resource's fault
                message = f"{item.where}: constraint {key} could not be evaluated ({type(error).__name__})"
                self._error("not-supported", message, node, item.where, severity="warning")
                continue
            if verdict is False:
                severity = "warning" if constraint.get("severity") == "warning" else "error"
                message = f"{item.where}: constraint {key} failed: {constraint.get('human', expression)}"
                self._error("invariant", message, node, item.where, severity=severity)

    def _type_profiles(self, node: Node, item: Item) -> None:
        urls = node.type_profiles(item.type) if item.type else []
        results: list[list[Issue]] = []
        for url in urls:
            snapshot = self.snapshot(url)
            if snapshot is None:
                if _shipped_extension(url):
                    continue  # the resource's own walk checked it against its shipped definition (extensions.py)
                message = f"{item.where}: profile {url} could not be resolved, the value is not checked against it"
                self._error("not-found", message, node, item.where, severity="warning")
                continue
            sub = self._sub(item)
            if sub is None:  # profiles nested MAX_DEPTH deep: a cycle (an extension defined by itself), not data
                continue
            sub.check(snapshot.root, item)
            results.append(sub.issues)
        passing = [issues for issues in results if not any(i.severity == "error" for i in issues)]
        if passing or len(results) == 1:
            self.issues += passing[0] if passing else results[0]
        elif results:  # several profiles allowed (any of them will do) and none fits
            message = f"{item.where}: the value conforms to none of the profiles {', '.join(urls)}"
            self._error("structure", message, node, item.where)

    def _slicing(self, node: Node, items: list[Item], where: str) -> None:
        slicing = node.element["slicing"]
        rules = slicing.get("rules", "open")
        if not node.slices and rules != "closed":
            return
        try:
            matched = assign(self, node, items)
        except Unsupported as reason:
            message = f"{where}: {reason}; the slices of {node.label} are not checked"
            self._error("not-supported", message, node, where, severity="warning")
            return
        for slice_node in node.slices:
            mine = [item for item, match in zip(items, matched, strict=True) if match is slice_node]
            self._cardinality(slice_node, mine, where)
            for item in mine:
                self.check(slice_node, item)
            if "slicing" in slice_node.element and slice_node.slices:  # re-slicing (name:A/B)
                self._slicing(slice_node, mine, where)
        unmatched_before = False
        last = -1
        for item, match in zip(items, matched, strict=True):
            if match is None:
                unmatched_before = True
                if rules == "closed":
                    message = f"{item.where}: matches none of the slices of {node.label}, and its slicing is closed"
                    self._error("structure", message, node, item.where)
                continue
            name = match.element.get("sliceName")
            if rules == "openAtEnd" and unmatched_before:
                message = f"{item.where}: slice '{name}' comes after an unsliced element, {node.label} is openAtEnd"
                self._error("structure", message, node, item.where)
            position = node.slices.index(match)
            if slicing.get("ordered") and position < last:
                message = f"{item.where}: slice '{name}' is out of order: the slices of {node.label} are ordered"
                self._error("structure", message, node, item.where)
            last = max(last, position)

    def _error(self, code: str, message: str, node: Node, where: str, severity: str = "error") -> None:
        self.issues.append(Issue(code, f"{message} (from {node.profile})", severity=severity, expression=[where]))


def _context_type(node: Node, item: Item) -> str:
    """The FHIRPath type of a value: its type (a resource, a datatype, a primitive), or for a backbone element the
    path that declares it (Observation.component; a contentReference's target: Observation.referenceRange)."""
    if item.type and item.type not in ("BackboneElement", "Element"):
        return item.type
    reference = node.element.get("contentReference")
    if reference:
        return reference.split("#", 1)[-1]
    return (node.element.get("base") or {}).get("path") or node.element["path"]


def _shipped_extension(url: str) -> bool:
    """R4's core extensions (and the SDC ones the measures use) ship as compact definitions, not snapshots, and a
    cross-version extension is defined by its URL: a profile naming one as a type adds nothing the walk of the
    resource has not checked (context, value type), so it is not reported as a profile that could not be found."""
    return extensions.definition(url) is not None or extensions.CROSS_VERSION.match(url) is not None

"""A profile's snapshot as a tree, and slicing: which slice each repetition of a sliced element belongs to.

``profiles.py`` walks a resource with this tree.  The snapshot is a flat list of ElementDefinitions; their ids give
the shape (R4 elementdefinition.html, "Element Id"): ``Observation.code.coding`` is a child of
``Observation.code``, ``Observation.code.coding:BodyTempCode`` a slice of ``Observation.code.coding`` and
``Observation.code.coding:BodyTempCode.system`` a child of that slice; ``coding:A/B`` re-slices slice ``A``.

A repetition is matched to a slice by the slicing's discriminators (R4 profiling.html, Slicing): each names a path
from the sliced element, and the slice's own definition of that path says what the repetition must have there —

- ``value``: the fixed value (or pattern) at the path; ``pattern``: the pattern at the path, contained;
- ``exists``: the path present (the slice's element has min ≥ 1) or absent (max = 0);
- ``type``: the type of the value at the path (``$this`` on ``value[x]`` slices by the choice's type);
- ``profile``: the value at the path conforms to the type profile the slice names there.

The path is followed into a type profile when the slice's tree stops short: an extension slice names its definition
as type profile and is discriminated by ``url``, whose fixed value is in that definition (or, when it cannot be
resolved, is that definition's URL); and into the required slices of a sliced element on the way (bp's
``component:SystolicBP`` fixes ``code.coding.code`` in its ``code.coding:SBPCode`` slice).  Paths through
``resolve()`` (the referenced resource) are not followed: ``Unsupported`` says so and the caller leaves that slicing
unjudged, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import orjson

SD = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_VALUE_KEY = re.compile(r"^(fixed|pattern)[A-Z]")
_FUNCTION = re.compile(r"^(extension|ofType)\((.*)\)$")


class Unsupported(Exception):
    """A discriminator this module cannot evaluate; the message says which and why."""


@dataclass(eq=False, slots=True)
class Node:
    """One ElementDefinition of a snapshot, with its children and (for a sliced element) its slices, in order."""

    element: dict[str, Any]
    profile: str  # the URL of the profile whose snapshot holds it (named in every issue)
    children: list[Node] = field(default_factory=list)
    slices: list[Node] = field(default_factory=list)
    index: dict[str, Node] = field(default_factory=dict)  # its snapshot's nodes by id, shared (contentReference)

    @property
    def name(self) -> str:
        return self.element["path"].rsplit(".", 1)[-1]

    @property
    def min(self) -> int:
        return int(self.element.get("min", 0))

    @property
    def max(self) -> int | None:  # None: unbounded
        value = self.element.get("max", "*")
        return None if value == "*" else int(value)

    @property
    def label(self) -> str:  # the element as the profile names it, for messages
        return self.element.get("id") or self.element["path"]

    def kids(self) -> list[Node]:
        """Its children; for a ``contentReference`` (``#Observation.referenceRange``), the target's."""
        reference = self.element.get("contentReference")
        if reference and not self.children:
            target = self.index.get(reference.split("#", 1)[-1])
            return target.children if target is not None else []
        return self.children

    def types(self) -> list[str]:
        return [type_code(entry) for entry in self.element.get("type", ())]

    def type_profiles(self, code: str | None = None) -> list[str]:
        return [
            url
            for entry in self.element.get("type", ())
            if code is None or type_code(entry) == code
            for url in entry.get("profile", ())
        ]


@dataclass(slots=True)
class Snapshot:
    url: str
    type: str
    root: Node
    by_id: dict[str, Node]
    definition: dict[str, Any]  # the StructureDefinition itself (kept so that a cache entry's id stays valid)


@dataclass(slots=True)
class Item:
    """One value of an element in the instance."""

    value: Any  # a dict for a complex type or resource, the JSON primitive otherwise (None: only its "_" twin)
    twin: dict[str, Any] | None  # a primitive's "_name" object (id, extension)
    where: str  # FHIRPath of the value: Observation.component[1].code
    type: str | None  # its FHIR type, when known (a choice's suffix, a resource's resourceType, the only type)

    @property
    def node(self) -> dict[str, Any]:
        """The object holding its children: itself, or a primitive's twin."""
        if type(self.value) is dict:
            return self.value
        return self.twin if type(self.twin) is dict else {}


class Context(Protocol):
    def snapshot(self, url: str) -> Snapshot | None: ...

    def conforms(self, snapshot: Snapshot, item: Item) -> bool: ...

    def codes(self, value_set: str) -> set[tuple[str, str]] | None: ...


def type_code(entry: dict[str, Any]) -> str:
    # The id elements' FHIRPath type (System.String) carries the FHIR type in an extension.
    for extension in entry.get("extension", ()):
        if extension.get("url") == FHIR_TYPE:
            return extension.get("valueUrl") or extension.get("valueUri") or entry["code"]
    code = entry["code"]
    return code.rsplit(".", 1)[-1].lower() if code.startswith("http://hl7.org/fhirpath/System.") else code


def build(definition: dict[str, Any]) -> Snapshot:
    """The tree of a StructureDefinition's snapshot (which the caller has checked is there)."""
    url = definition.get("url", "(no url)")
    elements = definition["snapshot"]["element"]
    by_id: dict[str, Node] = {}
    root: Node | None = None
    for element, element_id in zip(elements, _ids(elements), strict=True):
        node = Node(element, url, index=by_id)
        by_id[element_id] = node
        head, _, last = element_id.rpartition(".")
        if ":" in last:  # a slice of head.name, or a re-slice (name:A/B) of slice name:A
            name, _, slice_name = last.partition(":")
            sliced = f"{name}:{slice_name.rsplit('/', 1)[0]}" if "/" in slice_name else name
            owner = by_id.get(f"{head}.{sliced}" if head else sliced)
            if owner is not None:
                owner.slices.append(node)
        elif head:
            parent = by_id.get(head)
            if parent is not None:
                parent.children.append(node)
        elif root is None:
            root = node
    if root is None:
        raise ValueError(f"{url}: the snapshot has no root element")
    return Snapshot(url, definition.get("type") or root.element["path"], root, by_id, definition)


def _ids(elements: list[dict[str, Any]]) -> list[str]:
    """Each element's id; derived from path and sliceName when a (hand-written, or pre-R4) snapshot has none."""
    out: list[str] = []
    current: dict[str, str] = {}  # path → the id its elements get now (inside the slice last opened on it)
    for element in elements:
        path = element["path"]
        if element.get("id"):
            element_id = element["id"]
        else:
            head, _, name = path.rpartition(".")
            element_id = f"{current.get(head, head)}.{name}" if head else name
            if element.get("sliceName"):
                element_id += f":{element['sliceName']}"
        current = {p: i for p, i in current.items() if not p.startswith(path + ".")}
        current[path] = element_id
        out.append(element_id)
    return out


# Values: fixed[x] is exact, pattern[x] is contained (R4 ElementDefinition.fixed[x] / pattern[x]).


def fixed_or_pattern(element: dict[str, Any]) -> tuple[str, Any] | None:
    """("fixed" | "pattern", value) of an ElementDefinition, or None."""
    for key, value in element.items():
        match = _VALUE_KEY.match(key)
        if match:
            return match.group(1), value
    return None


def equal(instance: Any, fixed: Any) -> bool:
    if type(fixed) is dict:
        return (
            type(instance) is dict
            and instance.keys() == fixed.keys()
            and all(equal(instance[k], v) for k, v in fixed.items())
        )
    if type(fixed) is list:
        return (
            type(instance) is list
            and len(instance) == len(fixed)
            and all(equal(a, b) for a, b in zip(instance, fixed, strict=True))
        )
    return _same_primitive(instance, fixed)


def contains(instance: Any, pattern: Any) -> bool:
    """The instance has every member of the pattern; a pattern array's every element matches one of the instance's."""
    if type(pattern) is dict:
        return type(instance) is dict and all(k in instance and contains(instance[k], v) for k, v in pattern.items())
    if type(pattern) is list:
        values = instance if type(instance) is list else [instance]
        return all(any(contains(value, part) for value in values) for part in pattern)
    return _same_primitive(instance, pattern)


def _same_primitive(a: Any, b: Any) -> bool:
    # JSON true is not 1 (Python says it is); 1 and 1.0 are the same decimal.
    if (type(a) is bool) != (type(b) is bool):
        return False
    return a == b


# Slicing: which slice each item belongs to.


def assign(context: Context, node: Node, items: list[Item]) -> list[Node | None]:
    """The slice of ``node`` each item matches (the first, in the profile's order), or None."""
    discriminators = node.element.get("slicing", {}).get("discriminator", ())
    if not discriminators:
        # R4 allows slicing without discriminators ("by the profile's element definitions"): not supported here.
        raise Unsupported(f"{node.label} is sliced without discriminators")
    out: list[Node | None] = []
    for item in items:
        match = None
        for candidate in node.slices:
            if all(_matches(context, candidate, d, item) for d in discriminators):
                match = candidate
                break
        out.append(match)
    return out


def _matches(context: Context, slice_node: Node, discriminator: dict[str, Any], item: Item) -> bool:
    kind, path = discriminator.get("type"), discriminator.get("path", "$this")
    steps = _steps(path)
    found = _find(context, slice_node, steps)
    values = navigate(item, steps)
    if kind in ("value", "pattern"):
        if found is None:
            raise Unsupported(f"slice {slice_node.label} defines nothing at the discriminator path {path}")
        expected = fixed_or_pattern(found.element)
        if expected is not None:
            how, value = expected
            test: Callable[[Any, Any], bool] = equal if how == "fixed" and kind == "value" else contains
            return any(test(v.value, value) for v in values)
        return _in_bound_value_set(context, found, slice_node, path, values)
    if kind == "exists":
        if found is not None and found.min >= 1:
            return bool(values)
        if found is not None and found.max == 0:
            return not values
        raise Unsupported(f"slice {slice_node.label} neither requires nor prohibits {path}")
    if kind == "type":
        if found is None:
            raise Unsupported(f"slice {slice_node.label} defines nothing at the discriminator path {path}")
        allowed = set(found.types())
        return any((v.type or _only(allowed)) in allowed for v in values)
    if kind == "profile":
        urls = found.type_profiles() if found is not None else []
        if not urls:
            raise Unsupported(f"slice {slice_node.label} names no type profile at {path}")
        snapshots = [context.snapshot(url) for url in urls]
        if any(s is None for s in snapshots):
            raise Unsupported(f"a profile of slice {slice_node.label} cannot be resolved: {', '.join(urls)}")
        return any(context.conforms(s, v) for s in snapshots if s is not None for v in values)
    raise Unsupported(f"discriminator type {kind!r} is not an R4 one")


def _only(types: set[str]) -> str | None:
    return next(iter(types)) if len(types) == 1 else None


def _in_bound_value_set(context: Context, found: Node, slice_node: Node, path: str, values: list[Item]) -> bool:
    # A value discriminator may point at a required binding instead of a fixed value (R4 profiling.html, Slicing).
    binding = found.element.get("binding") or {}
    pairs = (
        context.codes(binding["valueSet"])
        if binding.get("strength") == "required" and binding.get("valueSet")
        else None
    )
    if pairs is None:
        raise Unsupported(f"slice {slice_node.label} has no fixed value, pattern or known required value set at {path}")
    codes = {code for _, code in pairs}
    for v in values:
        value = v.value
        if type(value) is str and value in codes:
            return True
        if type(value) is dict:
            codings = value["coding"] if type(value.get("coding")) is list else [value]  # CodeableConcept or Coding
            if any(type(c) is dict and (c.get("system"), c.get("code")) in pairs for c in codings):
                return True
    return False


def _steps(path: str) -> list[tuple[str, str]]:
    """A discriminator path as (kind, argument) steps: ("name", "coding"), ("extension", url), ("ofType", T)."""
    if "resolve()" in path:
        raise Unsupported(f"discriminator path {path} goes through resolve(): the referenced resource is not read")
    steps: list[tuple[str, str]] = []
    for part in _split(path):
        if part == "$this":
            continue
        function = _FUNCTION.match(part)
        if function:
            steps.append((function.group(1), function.group(2).strip().strip("'\"")))
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", part):
            steps.append(("name", part))
        else:
            raise Unsupported(f"discriminator path {path} is not a simple path")
    return steps


def _split(path: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(path):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0:
            parts.append(path[start:index])
            start = index + 1
    parts.append(path[start:])
    return [part.strip() for part in parts if part.strip()]


def _find(context: Context, node: Node, steps: list[tuple[str, str]]) -> Node | None:
    """The slice's definition at the discriminator path, following type profiles where its own tree stops."""
    current = node
    for kind, argument in steps:
        found = _step(current, kind, argument)
        for url in current.type_profiles() if found is None else ():
            profile = context.snapshot(url)
            found = _step(profile.root, kind, argument) if profile is not None else None
            if found is not None:
                break
        if found is None and kind == "name" and argument == "url" and "Extension" in current.types():
            urls = current.type_profiles("Extension")
            if urls:  # the definition cannot be read, but its URL is the extension's url all the same
                return Node({"path": "Extension.url", "min": 1, "max": "1", "fixedUri": urls[0]}, node.profile)
        if found is None:
            return None
        current = found
    return current


def _step(current: Node, kind: str, argument: str) -> Node | None:
    found = _child_step(current, kind, argument)
    if found is None:  # bp's component:SystolicBP.code.coding fixes its code in a slice of coding (SBPCode)
        required = [s for s in current.slices if s.min >= 1]
        found = next((f for s in required if (f := _child_step(s, kind, argument)) is not None), None)
    return found


def _child_step(current: Node, kind: str, argument: str) -> Node | None:
    children = current.kids()
    if kind == "ofType":  # a type slice of a choice, or the choice itself when it allows the type
        for candidate in current.slices:
            if argument in candidate.types() and len(candidate.types()) == 1:
                return candidate
        return current if argument in current.types() else None
    if kind == "extension":
        for child in children:
            if child.name == "extension":
                for candidate in child.slices:
                    if argument in candidate.type_profiles() or _fixed_url(candidate) == argument:
                        return candidate
        return None
    for child in children:
        if child.name == argument:
            return child
        if child.name.endswith("[x]") and argument.startswith(child.name[:-3]):
            suffix = argument[len(child.name) - 3 :]
            if suffix[:1].isupper():  # valueQuantity: the type slice of value[x], or value[x] itself
                for candidate in child.slices:
                    if candidate.element.get("sliceName") == argument:
                        return candidate
                return child
    return next((c for c in children if c.name == f"{argument}[x]"), None)


def _fixed_url(node: Node) -> str | None:
    url = next((c for c in node.children if c.name == "url"), None)
    return url.element.get("fixedUri") if url is not None else None


# Navigation: the instance's values at a discriminator path.


def navigate(item: Item, steps: list[tuple[str, str]]) -> list[Item]:
    current = [item]
    for kind, argument in steps:
        following: list[Item] = []
        for value in current:
            if kind == "name":  # "value" also finds valueQuantity (FHIRPath names a choice without its type)
                following += children_named(value.node, argument, value.where) or children_named(
                    value.node, f"{argument}[x]", value.where
                )
            elif kind == "extension":
                extensions = children_named(value.node, "extension", value.where)
                following += [e for e in extensions if type(e.value) is dict and e.value.get("url") == argument]
            elif value.type == argument:  # ofType
                following.append(value)
        current = following
    return current


def children_named(node: dict[str, Any], name: str, where: str, only_type: str | None = None) -> list[Item]:
    """The items of one child in an instance object, in order: ``name``, or every ``value<Type>`` key of a choice
    ``value[x]``; a primitive's value and its ``_name`` twin make one item.  ``only_type``: the element's one type."""
    if name.endswith("[x]"):
        prefix = name[:-3]
        keys = {}
        for key in node:
            bare = key.removeprefix("_")
            kind = choice_type(bare[len(prefix) :]) if bare.startswith(prefix) else None
            if kind is not None:
                keys.setdefault(bare, kind)
    else:
        keys = {name: only_type} if name in node or f"_{name}" in node else {}
    out: list[Item] = []
    for key, kind in keys.items():
        value, twin = node.get(key), node.get(f"_{key}")
        if type(value) is list or type(twin) is list:
            values = value if type(value) is list else []
            twins = twin if type(twin) is list else []
            for index in range(max(len(values), len(twins))):
                v = values[index] if index < len(values) else None
                t = twins[index] if index < len(twins) else None
                if v is not None or t is not None:
                    out.append(Item(v, t if type(t) is dict else None, f"{where}.{key}[{index}]", _typed(v, kind)))
        elif value is not None or twin is not None:
            out.append(Item(value, twin if type(twin) is dict else None, f"{where}.{key}", _typed(value, kind)))
    return out


def _typed(value: Any, kind: str | None) -> str | None:
    # A resource (contained, Bundle.entry.resource) is of the type its JSON names.
    if kind in (None, "Resource", "DomainResource") and type(value) is dict and type(value.get("resourceType")) is str:
        return value["resourceType"]
    return kind


@cache
def base_tables() -> dict[str, Any]:
    """``data/r4_types.json``: the base types' elements and invariants (scripts/r4_structures.py writes it)."""
    return orjson.loads(resources.files("fhir_server.validation").joinpath("data/r4_types.json").read_bytes())


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

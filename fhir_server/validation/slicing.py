"""Slicing: which slice of a sliced element each of its repetitions belongs to (R4 profiling.html, Slicing).

``profiles.py`` checks each slice's cardinality and definitions, and the slicing's rules, with what ``assign`` says.
A repetition is matched to a slice by the slicing's discriminators: each names a path from the sliced element, and
the slice's own definition of that path (in the snapshot tree, ``profile_tree.py``) says what the repetition must
have there —

- ``value``: the fixed value (or pattern) at the path; ``pattern``: the pattern at the path, contained
  (``profile_values.py`` compares them);
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
from typing import Any, Protocol

from fhir_server.validation.profile_items import Item, children_named
from fhir_server.validation.profile_tree import Node, Snapshot
from fhir_server.validation.profile_values import contains, equal, fixed_or_pattern

_FUNCTION = re.compile(r"^(extension|ofType)\((.*)\)$")


class Unsupported(Exception):
    """A discriminator this module cannot evaluate; the message says which and why."""


class Context(Protocol):
    """What matching needs of the walk (``profiles.py``): type profiles, conformance to one, value sets' codes."""

    def snapshot(self, url: str) -> Snapshot | None: ...

    def conforms(self, snapshot: Snapshot, item: Item) -> bool: ...

    def codes(self, value_set: str) -> set[tuple[str, str]] | None: ...


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

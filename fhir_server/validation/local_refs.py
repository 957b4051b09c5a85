"""Rules local to one resource that HL7's validator checks beyond structure and invariants.

- a ``#id`` reference (``Reference.reference`` or a ``canonical``) names a contained resource of the same container;
  ``#`` alone names the container, from inside one of its contained resources (R4 references.html#contained);
- element ids (the ``id`` of any element that is not a resource) are unique within a resource;
- a resource inside another (contained, a Bundle entry's, a parameter's) has a valid id (1-64 of [A-Za-z0-9-.]);
  a contained one has one, unique among its siblings.

Each nested resource is its own scope: a contained resource, a Bundle entry's resource, a Parameters resource.  A
reference from inside a contained resource resolves against its container's ``contained`` list, as HL7 does; a
Bundle entry or a parameter is a boundary no ``#`` reference crosses.

The walk is typed by the R4 definitions (``definitions.py``): a ``canonical`` is known by its type, not by a guess on
its key, and ``DetectedIssue.reference`` (a ``uri``) is not mistaken for a Reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fhir_server.validation.definitions as definitions
from fhir_server.errors import Issue

RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Anchors a "#x" canonical may name inside narrative XHTML (HL7 counts these too).
_XHTML_ANCHOR = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']*)["']""")


@dataclass(frozen=True, slots=True)
class Node:
    path: str  # FHIRPath of the value: "Composition.section[0].entry[1]"
    key: str  # the JSON key that holds it ("valueReference", "_given", "contained")
    type: str  # its FHIR type ("Reference", "canonical", "Element" for a primitive's "_x" object, "Resource")
    value: Any


def nodes(resource: dict[str, Any], path: str) -> Iterator[Node]:
    """Every value in ``resource`` in document order, with its FHIR type.

    A nested resource (contained, a Bundle entry's, a parameter's) is yielded with type ``Resource`` and not walked
    into: each caller decides how far its rule reaches.  Keys the definitions do not know are skipped (the structure
    walk reports them); so is a resource of a type R4 does not define."""
    resource_type = resource.get("resourceType")
    if isinstance(resource_type, str) and definitions.is_resource(resource_type):
        yield from _walk(resource, resource_type, resource_type, path)


def _walk(node: dict[str, Any], owner: str, element: str, path: str) -> Iterator[Node]:
    table = definitions.children(owner, element)
    for key, raw in node.items():
        child = table.get(key)
        if child is None:
            continue
        name = key.removeprefix("_")  # "_given" is the same element as "given" in FHIRPath
        kind = "Element" if key.startswith("_") else child.type
        many = isinstance(raw, list)
        for i, item in enumerate(raw if many else (raw,)):
            if item is None:  # the gaps of a primitive array and its "_x" twin
                continue
            where = f"{path}.{name}[{i}]" if many else f"{path}.{name}"
            if kind == "Resource" or (isinstance(item, dict) and "resourceType" in item):
                if isinstance(item, dict):  # anything else where a resource belongs is the structure walk's
                    yield Node(where, key, "Resource", item)
                continue
            yield Node(where, key, kind, item)
            if isinstance(item, dict):
                if key.startswith("_"):
                    sub = ("Element", "Element")  # a primitive's id and extensions
                elif child.element.children is not None:
                    sub = child.element.children  # a backbone element, walked with its owner's table
                elif definitions.type_info(kind) is not None:
                    sub = definitions.datatype_root(kind)
                else:
                    continue
                yield from _walk(item, sub[0], sub[1], where)


def nested_resources(resource: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The resources directly inside ``resource`` (contained, entries', parameters'), with their paths."""
    for node in nodes(resource, path):
        if node.type == "Resource" and isinstance(node.value, dict):
            yield node.path, node.value


def references(resource: dict[str, Any], path: str) -> list[tuple[str, str, str]]:
    """(path, value, FHIR type) of every literal reference in ``resource`` and its contained resources: each
    ``Reference.reference`` and each uri, url or canonical, "#" ones left out (those are local, checked below).
    Other nested resources are left out: a Bundle inside has its own entries to resolve against."""
    found: list[tuple[str, str, str]] = []
    pending = [(path, resource)]
    while pending:
        where, current = pending.pop()
        for node in nodes(current, where):
            value = node.value
            if node.type == "Reference" and isinstance(value, dict):
                node_path, value = f"{node.path}.reference", value.get("reference")
            elif node.type in ("uri", "url", "canonical"):
                node_path = node.path
            else:
                if node.type == "Resource" and node.key == "contained":
                    pending.append((node.path, value))
                continue
            if isinstance(value, str) and value and not value.startswith("#"):
                found.append((node_path, value, node.type))
    return found


def local_ref_issues(resource: dict[str, Any], path: str | None = None) -> list[Issue]:
    """Issues of ``#`` references, element ids and contained ids in ``resource`` and every resource inside it,
    found by this module's own walk (``check`` has the structure walk feed ``LocalRefs`` instead, and asks this
    only when that walk left the typed one: see ``structure.Walk.refs``)."""
    refs = LocalRefs()
    if isinstance(resource, dict):
        _feed(resource, path or str(resource.get("resourceType")), None, refs)
    return refs.issues


def _feed(resource: dict[str, Any], path: str, container: dict[str, Any] | None, refs: LocalRefs) -> None:
    refs.enter(resource, path, container)
    for node in nodes(resource, path):
        value = node.value
        if node.type == "Resource":
            # a contained resource keeps its container; an entry's or a parameter's resource starts afresh
            _feed(value, node.path, resource if node.key == "contained" else None, refs)
        elif isinstance(value, dict):
            refs.element(node.path, value, node.type == "Reference")
        elif node.type == "canonical" and isinstance(value, str):
            refs.canonical(node.path, value)
    refs.leave()


class _Scope:
    """One resource being checked: its ids so far and what its ``#`` references may name."""

    __slots__ = ("_anchors", "_contained_ids", "container", "element_ids", "resource", "snapshot", "snapshot_ids")

    def __init__(self, resource: dict[str, Any], path: str, container: dict[str, Any] | None) -> None:
        self.resource = resource
        self.container = container
        # A StructureDefinition's snapshot repeats its differential's element ids: HL7 gives it a scope of its own.
        self.snapshot = f"{path}.snapshot" if resource.get("resourceType") == "StructureDefinition" else None
        self.element_ids: set[str] = set()
        self.snapshot_ids: set[str] = set()
        self._contained_ids: set[str] | None = None
        self._anchors: set[str] | None = None  # computed only if a "#x" canonical needs them

    @property
    def home(self) -> dict[str, Any]:
        # A contained resource's "#x" names a sibling: contained resources do not nest, so the list is the container's.
        return self.container if self.container is not None else self.resource

    def contained_ids(self) -> set[str]:
        """The ids a "#x" may name (a "#x" is a string: an id that is not one, which the structure walk reports,
        names nothing, and as a set member it raised TypeError for an object or array)."""
        if self._contained_ids is None:
            self._contained_ids = {c["id"] for c in _contained(self.home) if isinstance(c.get("id"), str)}
        return self._contained_ids

    def anchors(self) -> set[str]:
        if self._anchors is None:
            self._anchors = _anchors(self.home)
        return self._anchors


class LocalRefs:
    """The rules of this module, fed the nodes of a resource in document order: ``enter`` and ``leave`` around each
    resource (the outermost, then each one inside it where it occurs), ``element`` for every object that is not a
    resource (complex values, backbone elements, a primitive's ``_x`` object), ``canonical`` for every canonical
    string.  Two walks feed it: ``_feed`` above over ``nodes()``, and the structure walk (``structure.py``), which
    visits the same nodes in the same order when the resource is well formed; the issues come out in that order."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self._scopes: list[_Scope] = []

    def enter(self, resource: dict[str, Any], path: str, container: dict[str, Any] | None) -> None:
        """``container``: the resource whose ``contained`` holds this one, else None."""
        if self._scopes:  # the outermost resource's id is checked where it is read (resource.check_id)
            self.issues += _id_issues(resource, path)
        if container is None:
            self.issues += _contained_id_issues(resource, path)
        self._scopes.append(_Scope(resource, path, container))

    def leave(self) -> None:
        self._scopes.pop()

    def element(self, path: str, value: dict[str, Any], is_reference: bool) -> None:
        scope = self._scopes[-1]
        element_id = value.get("id")
        if isinstance(element_id, str):
            ids = scope.snapshot_ids if scope.snapshot and path.startswith(scope.snapshot) else scope.element_ids
            if element_id in ids:
                self.issues.append(_issue("business-rule", _named(path), f"Duplicate id value '{element_id}'"))
            ids.add(element_id)
        # "#x" naming no contained resource is ref-1's to report (invariants.py); "#" alone, the container, only
        # means something from inside a contained resource
        if is_reference and scope.container is None and value.get("reference") == "#":
            where = f"{_named(path)}.reference"
            self.issues.append(_issue("structure", where, "Unable to resolve resource with reference '#'"))

    def canonical(self, path: str, value: str) -> None:
        if not value.startswith("#"):
            return
        scope = self._scopes[-1]
        target = value[1:]
        if target in scope.contained_ids() or (not target and scope.container is not None):
            return
        # HL7 accepts any id inside the container as a canonical's target, as it does a narrative anchor
        if not target or target not in scope.anchors():
            message = f"The URL value '{value}' is invalid because there is no matching target"
            self.issues.append(_issue("invalid", _named(path), message))


def _named(path: str) -> str:
    """The FHIRPath of a node as these rules name it: the structure walk names a primitive's id and extensions by
    their JSON key (``name[0]._given[1]``), FHIRPath and ``nodes()`` by the primitive (``name[0].given[1]``).  Only
    those keys start with an underscore in a well-formed resource's paths."""
    return path.replace("._", ".")


def _contained(resource: dict[str, Any]) -> list[dict[str, Any]]:
    contained = resource.get("contained")
    return [c for c in contained if isinstance(c, dict)] if isinstance(contained, list) else []


def _id_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """The id rules (R4 datatypes.html#id) for a resource inside another (the outermost one's id is checked where
    it is read, fhir_server.validation.resource.check_id)."""
    resource_id = resource.get("id")
    if not isinstance(resource_id, str):
        return []  # absent (see below for contained ones), or not a string: the structure walk reports it
    if len(resource_id) > 64:
        return [_issue("invalid", f"{path}.id", f"Invalid Resource id: Too long ({len(resource_id)} chars)")]
    if not RESOURCE_ID.fullmatch(resource_id):
        return [_issue("invalid", f"{path}.id", f"Invalid Resource id: Invalid Characters ('{resource_id}')")]
    return []


def _contained_id_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """A contained resource is only reachable by its id, so it must have one, unique among its siblings."""
    issues: list[Issue] = []
    seen: set[str] = set()
    contained = resource.get("contained")
    for i, item in enumerate(contained if isinstance(contained, list) else ()):
        if not isinstance(item, dict):
            continue
        where = f"{path}.contained[{i}]"
        contained_id = item.get("id")
        if contained_id is None:
            issues.append(_issue("invalid", where, "Resource requires an id, but none is present"))
            continue
        if not isinstance(contained_id, str):
            continue  # the structure walk reports a non-string id
        if contained_id in seen:
            issues.append(_issue("duplicate", where, f"Duplicate ID for contained resource: {contained_id}"))
        seen.add(contained_id)
    return issues


def _anchors(resource: dict[str, Any]) -> set[str]:
    """Every id anywhere in ``resource`` (its own, its elements', its contained resources'), and narrative anchors."""
    found: set[str] = set()
    stack: list[Any] = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                found.add(item["id"])
            div = item.get("div")
            if isinstance(div, str):
                found.update(_XHTML_ANCHOR.findall(div))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _issue(code: str, where: str, message: str) -> Issue:
    return Issue(code, f"{where}: {message}", expression=[where])

"""A profile's snapshot as a tree: the shape ``profiles.py`` walks a resource with and ``slicing.py`` matches in.

The snapshot is a flat list of ElementDefinitions; their ids give the shape (R4 elementdefinition.html,
"Element Id"): ``Observation.code.coding`` is a child of ``Observation.code``, ``Observation.code.coding:BodyTempCode``
a slice of ``Observation.code.coding`` and ``Observation.code.coding:BodyTempCode.system`` a child of that slice;
``coding:A/B`` re-slices slice ``A``.  A snapshot without ids (hand-written, or pre-R4) gets them from path and
sliceName.  Built trees are cached by the identity of their StructureDefinition (``tree``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


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


def type_code(entry: dict[str, Any]) -> str:
    # The id elements' FHIRPath type (System.String) carries the FHIR type in an extension.
    for extension in entry.get("extension", ()):
        if extension.get("url") == FHIR_TYPE:
            return extension.get("valueUrl") or extension.get("valueUri") or entry["code"]
    code = entry["code"]
    return code.rsplit(".", 1)[-1].lower() if code.startswith("http://hl7.org/fhirpath/System.") else code


# Built trees, by the identity of the StructureDefinition (each entry keeps it alive, so an id is never reused).
_TREES: OrderedDict[int, Snapshot] = OrderedDict()
_TREES_LOCK = threading.Lock()


def tree(definition: dict[str, Any]) -> Snapshot:
    """``build(definition)``, once per StructureDefinition object (the 256 used last are kept)."""
    with _TREES_LOCK:
        cached = _TREES.get(id(definition))
    if cached is None or cached.definition is not definition:
        cached = build(definition)
        with _TREES_LOCK:
            _TREES[id(definition)] = cached
            while len(_TREES) > 256:
                _TREES.popitem(last=False)
    return cached


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

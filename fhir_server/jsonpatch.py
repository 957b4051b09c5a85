"""JSON Patch (RFC 6902) applied to a resource, for the FHIR patch interaction."""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.errors import FhirError

_OPS = {"add", "remove", "replace", "move", "copy", "test"}


def _error(index: int, message: str, code: str = "invalid") -> FhirError:
    return FhirError(422 if code == "processing" else 400, code, f"Patch operation {index}: {message}")


def _pointer(path: Any, index: int) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _error(index, f"'{str(path)[:80]}' is not a JSON pointer")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _parent(doc: Any, parts: list[str], index: int) -> tuple[Any, str]:
    if not parts:
        raise _error(index, "the whole resource cannot be the target")
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, index)
    return node, parts[-1]


def _child(node: Any, part: str, index: int) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise _error(index, f"path segment '{part[:40]}' does not exist", "processing")


def _get(doc: Any, parts: list[str], index: int) -> Any:
    node = doc
    for part in parts:
        node = _child(node, part, index)
    return node


def _remove(doc: Any, parts: list[str], index: int) -> Any:
    parent, key = _parent(doc, parts, index)
    if isinstance(parent, dict) and key in parent:
        return parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent.pop(int(key))
    raise _error(index, f"nothing to remove at '{key[:40]}'", "processing")


def _add(doc: Any, parts: list[str], value: Any, index: int) -> None:
    parent, key = _parent(doc, parts, index)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise _error(index, f"array index '{key[:40]}' is out of range", "processing")
    else:
        raise _error(index, "the target's parent is not an object or array", "processing")


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise FhirError(400, "structure", "A JSON Patch document is an array of operations")
    doc = copy.deepcopy(resource)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or op.get("op") not in _OPS:
            raise _error(index, "each operation needs an 'op' of add, remove, replace, move, copy or test")
        name, parts = op["op"], _pointer(op.get("path"), index)
        if name in ("add", "replace", "test") and "value" not in op:
            raise _error(index, f"'{name}' needs a 'value'")
        if name == "add":
            _add(doc, parts, copy.deepcopy(op["value"]), index)
        elif name == "remove":
            _remove(doc, parts, index)
        elif name == "replace":
            _get(doc, parts, index)
            _remove(doc, parts, index)
            _add(doc, parts, copy.deepcopy(op["value"]), index)
        elif name == "test":
            if _get(doc, parts, index) != op["value"]:
                raise _error(index, "test failed", "processing")
        else:  # move / copy
            source = _pointer(op.get("from"), index)
            value = _remove(doc, source, index) if name == "move" else copy.deepcopy(_get(doc, source, index))
            _add(doc, parts, value, index)
    return doc

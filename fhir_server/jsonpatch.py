"""JSON Patch (RFC 6902) applied to a resource, for the FHIR patch interaction.

The operations are applied by the ``jsonpatch`` package (and its ``jsonpointer``), which carries the RFC's details:
array indices are ASCII digits without leading zeros, only ``~0`` and ``~1`` are escapes, ``test`` compares as
JSON does (``true`` is not ``1``), a value cannot be moved into its own children.  This module adds the rules of
the FHIR interaction on top of it:

- the whole resource is never the target (a patch changes a resource's content, not the resource itself; a
  ``test`` may still read the whole resource and ``copy`` copy it);
- every failure is an OperationOutcome naming the operation and the pointer: 400 ``invalid`` for a malformed
  operation, 422 ``processing`` for one that cannot be applied to this resource, never the library's own message,
  which can quote the resource (a caller allowed to update it need not be allowed to read it).

``import jsonpatch`` below is the package: imports are absolute, so this module (``fhir_server.jsonpatch``) does not
shadow it.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from fhir_server.errors import FhirError

_OPS = ("add", "remove", "replace", "move", "copy", "test")
_NEEDS_VALUE = ("add", "replace", "test")
# The library reports a missing member of an object or list with Python's own lookup errors in some cases; they
# are failures of the patch like the others (caught only around one operation's application).
_APPLY_ERRORS = (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, IndexError, TypeError)


def _error(index: int, message: str, code: str = "invalid") -> FhirError:
    return FhirError(422 if code == "processing" else 400, code, f"Patch operation {index}: {message}")


def _quoted(pointer: Any) -> str:
    return f"'{str(pointer)[:80]}'"


def _pointer(value: Any, index: int, member: str = "path") -> jsonpointer.JsonPointer:
    if value is None:
        raise _error(index, f"the operation needs a '{member}'")
    try:
        if isinstance(value, str):
            return jsonpointer.JsonPointer(value)
    except jsonpointer.JsonPointerException:
        pass
    raise _error(
        index,
        f"{_quoted(value)} is not a JSON pointer (it starts with '/', and within it '~' is written ~0 and '/' ~1)",
    )


def _check(op: Any, index: int) -> None:
    """The operation's shape, before anything is applied: 400 for a malformed operation."""
    if not isinstance(op, dict) or op.get("op") not in _OPS:
        raise _error(index, "each operation needs an 'op' of add, remove, replace, move, copy or test")
    name = op["op"]
    path = _pointer(op.get("path"), index)
    if not path.parts and name != "test":
        raise _error(index, "the whole resource cannot be the target")
    if name in _NEEDS_VALUE and "value" not in op:
        raise _error(index, f"'{name}' needs a 'value'")
    if name in ("move", "copy"):
        source = _pointer(op.get("from"), index, "from")
        if not source.parts and name == "move":
            raise _error(index, "the whole resource cannot be moved")


def _unresolved(doc: Any, pointer: jsonpointer.JsonPointer, *, inserting: bool) -> str | None:
    """Why ``pointer`` does not lead anywhere in ``doc`` (for an insertion: to a place a value can go), in words
    that name the pointer and its segment but quote nothing of the resource; None when it does."""
    node = doc
    for depth, part in enumerate(pointer.parts):
        where = _quoted(jsonpointer.JsonPointer.from_parts(pointer.parts[: depth + 1]).path)
        last = depth == len(pointer.parts) - 1
        if isinstance(node, dict):
            if inserting and last:
                return None
            if part not in node:
                return f"{where} does not exist"
            node = node[part]
        elif isinstance(node, list):
            try:
                position = jsonpointer.JsonPointer.get_part(node, part)
            except jsonpointer.JsonPointerException:
                return f"{where}: '{part[:40]}' is not an array index (digits without leading zeros, or '-')"
            if inserting and last:
                return None if position == "-" or position <= len(node) else f"{where} is past the end of the array"
            if position == "-" or position >= len(node):
                return f"{where} is past the end of the array"
            node = node[position]
        else:
            return f"{where}: its parent holds a value, not an object or array"
    return None


def _explain(doc: Any, op: dict[str, Any], failure: Exception) -> tuple[str, str]:
    """The code and message of an operation that failed, from what the document holds rather than from the
    library's message."""
    name = op["op"]
    path = jsonpointer.JsonPointer(op["path"])
    if isinstance(failure, jsonpatch.InvalidJsonPatch):  # e.g. 'replace' of '/name/-'
        return "invalid", f"'{name}' cannot be applied to {_quoted(path.path)}"
    if name in ("move", "copy"):
        reason = _unresolved(doc, jsonpointer.JsonPointer(op["from"]), inserting=False)
        if reason:
            return "processing", f"from {reason}"
        if name == "move" and path.contains(jsonpointer.JsonPointer(op["from"])):
            return "processing", f"{_quoted(op['from'])} cannot be moved into its own children"
    reason = _unresolved(doc, path, inserting=name in ("add", "move", "copy"))
    if reason:
        return "processing", reason
    if name == "test":
        return "processing", f"test failed: the value at {_quoted(path.path)} is not the one tested"
    return "processing", f"'{name}' cannot be applied to {_quoted(path.path)}"  # e.g. an array index past the end


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """The resource with the JSON Patch ``operations`` applied (the argument is left unchanged); FhirError (400 or
    422 OperationOutcome) for any operation that is malformed or cannot be applied."""
    if not isinstance(operations, list):
        raise FhirError(400, "structure", "A JSON Patch document is an array of operations")
    doc = copy.deepcopy(resource)
    for index, op in enumerate(operations):
        _check(op, index)
        try:
            # atomic: a failed operation leaves the document as it was, for _explain to read
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True, atomic=True)
        except _APPLY_ERRORS as failure:
            code, message = _explain(doc, op, failure)
            raise _error(index, message, code) from None
    return doc

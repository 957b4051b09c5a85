"""One entry of a batch or transaction Bundle, and what the processor needs to read from entries: references
(plain and conditional), a PATCH entry's JSON Patch, an error naming the entry, a searchset for a GET entry."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.engine.interactions import SearchResult
from fhir_server.errors import FhirError
from fhir_server.store.records import Stored


@dataclass
class Entry:
    index: int
    method: str
    url: str
    path: list[str]  # ["Patient"] or ["Patient", "123"] or ["Patient", "123", "_history", "2"]
    query: str
    resource: Any = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    original: Any = None  # the resource as received; a retried transaction rewrites references afresh
    response: dict[str, Any] = field(default_factory=dict)
    result: Any = None


def at_entry(entry: Entry, err: FhirError) -> FhirError:
    """The error of one entry, naming it, for the whole transaction's answer."""
    first = err.issues[0]
    where = f"Bundle.entry[{entry.index}]"
    return FhirError(
        err.status,
        first.code,
        f"{where} ({entry.method} {entry.url[:80]}): {first.diagnostics}",
        expression=[where, *first.expression],
        headers=err.headers,
    )


def fragment(stored: Stored) -> Any:
    return orjson.Fragment(stored.content.encode()) if stored.content else None


def searchset(base: str, resource_type: str, result: SearchResult) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.outcome.total is not None:
        bundle["total"] = result.outcome.total
    bundle["entry"] = [
        {"fullUrl": f"{base}/{s.resource_type}/{s.id}", "resource": fragment(s), "search": {"mode": mode}}
        for mode, stored in (("match", result.outcome.matches), ("include", result.outcome.included))
        for s in stored
    ]
    return bundle


def patch_operations(resource: Any) -> Any:
    """In a Bundle, a JSON Patch travels as a Binary whose data is the base64 patch document."""
    if (
        isinstance(resource, dict)
        and resource.get("resourceType") == "Binary"
        and isinstance(resource.get("data"), str)
    ):
        try:
            return fhirjson.parse(base64.b64decode(resource["data"], validate=True))
        except ValueError:
            raise FhirError(400, "structure", "The Binary's data is not base64") from None
    raise FhirError(400, "not-supported", "PATCH entries must carry a Binary with a JSON Patch document")


def reference_strings(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["reference"]} if isinstance(node.get("reference"), str) else set()
        return found.union(*(reference_strings(v) for k, v in node.items() if k != "div"))
    if isinstance(node, list):
        return set().union(*(reference_strings(v) for v in node))
    return set()


def has_conditional_refs(node: Any) -> bool:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and "?" in ref:
            return True
        return any(has_conditional_refs(v) for k, v in node.items() if k != "div")
    if isinstance(node, list):
        return any(has_conditional_refs(v) for v in node)
    return False

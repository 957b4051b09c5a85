"""Searchset and history Bundles, with paging links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request

from fhir_server import fhirjson
from fhir_server.api.http import base_url
from fhir_server.engine.interactions import SearchResult
from fhir_server.errors import Issue, operation_outcome
from fhir_server.search.query import SearchQuery
from fhir_server.search.summary import shape_resource
from fhir_server.store.records import Stored, instant, utc_now


def _linker(request: Request, path: str, params: list[tuple[str, str]]) -> Callable[[str | None], str]:
    """The search's URL with a given paging cursor (or none): its other parameters encoded once for all links."""
    url = f"{base_url(request)}/{path}"
    query = urlencode([(k, v) for k, v in params if k != "_cursor"])

    def link(cursor: str | None) -> str:
        parts = [part for part in (query, urlencode([("_cursor", cursor)]) if cursor else "") if part]
        return f"{url}?{'&'.join(parts)}" if parts else url

    return link


def _resource(stored: Stored) -> Any:
    # Stored content goes out as it is: an orjson Fragment avoids parsing and re-serialising every entry.
    return orjson.Fragment(stored.content.encode()) if stored.content else None


def searchset(request: Request, path: str, params: list[tuple[str, str]], result: SearchResult) -> dict[str, Any]:
    query, outcome = result.query, result.outcome
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": instant(utc_now())},
    }
    if outcome.total is not None:
        bundle["total"] = outcome.total
    link = _linker(request, path, params)
    links = [{"relation": "self", "url": link(query.cursor)}]
    if outcome.next_cursor:
        links.append({"relation": "next", "url": link(outcome.next_cursor)})
    if outcome.prev_cursor:
        links.append({"relation": "previous", "url": link(outcome.prev_cursor)})
    bundle["link"] = links
    base = base_url(request)
    entries = [_entry(base, stored, "match", query) for stored in outcome.matches]
    entries += [_entry(base, stored, "include", query) for stored in outcome.included]
    warnings = []
    if query.ignored:
        warnings.append("Ignored unknown or unsupported search parameters: " + ", ".join(query.ignored))
    if outcome.includes_truncated:
        warnings.append("_include/_revinclude stopped at the server's limit; not every related resource is here")
    if warnings:
        issues = [Issue("not-supported" if "Ignored" in w else "too-costly", w, severity="warning") for w in warnings]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(base: str, stored: Stored, mode: str, query: SearchQuery) -> dict[str, Any]:
    resource = _resource(stored)
    if query.summary or query.elements:
        resource = shape_resource(fhirjson.loads_stored(stored.content or "{}"), query.summary, query.elements)
    return {"fullUrl": f"{base}/{stored.resource_type}/{stored.id}", "resource": resource, "search": {"mode": mode}}


def history(
    request: Request,
    path: str,
    params: list[tuple[str, str]],
    rows: Sequence[tuple[int, Stored]],
    next_cursor: str | None,
) -> dict[str, Any]:
    base = base_url(request)
    link = _linker(request, path, params)
    links = [{"relation": "self", "url": link(dict(params).get("_cursor"))}]
    if next_cursor:
        links.append({"relation": "next", "url": link(next_cursor)})
    entries = []
    for _, stored in rows:
        url = f"{stored.resource_type}/{stored.id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if stored.content:
            entry["resource"] = _resource(stored)
        # History records what was done: POST to the type, or PUT/PATCH/DELETE on the instance.
        entry["request"] = {
            "method": stored.method,
            "url": stored.resource_type if stored.method == "POST" else url,
        }
        entry["response"] = {
            "status": {"POST": "201 Created", "DELETE": "204 No Content"}.get(stored.method, "200 OK"),
            "etag": stored.etag,
            "lastModified": stored.last_updated_iso,
        }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle

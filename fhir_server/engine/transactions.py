"""Batch and transaction Bundles (FHIR R4 §3.1.0.11).

A transaction runs in one database transaction: entries are processed in the specification's order (DELETE,
POST, PUT/PATCH, GET), ``urn:uuid:`` fullUrls and conditional references (``Patient?identifier=s|v``) are
resolved in every reference of the Bundle, and any failure rolls every entry back and names the entry at fault.
A batch runs each entry on its own; one entry failing does not affect the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.engine.bundle_entries import (
    Entry,
    at_entry,
    fragment,
    has_conditional_refs,
    patch_operations,
    reference_strings,
    searchset,
)
from fhir_server.engine.interactions import Interactions, require_type
from fhir_server.errors import FhirError
from fhir_server.ids import new_id
from fhir_server.store.records import Stored, WriteResult, instant, utc_now
from fhir_server.store.repository import WriteSession

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
MAX_ENTRIES = 10_000


class BundleProcessor:
    def __init__(self, fhir: Interactions, base: str, *, return_resources: bool = False) -> None:
        self.fhir = fhir
        self.base = base.rstrip("/")
        self.return_resources = return_resources

    # -- entry points -----------------------------------------------------------------------------------
    def process(self, bundle: Any) -> dict[str, Any]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FhirError(400, "invalid", "POST to the base URL takes a Bundle of type batch or transaction")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise FhirError(400, "invalid", f"Bundle.type must be batch or transaction, not '{str(kind)[:20]}'")
        raw_entries = bundle.get("entry", [])
        if not isinstance(raw_entries, list):
            raise FhirError(400, "structure", "Bundle.entry must be an array")
        if len(raw_entries) > MAX_ENTRIES:
            raise FhirError(413, "too-long", f"A Bundle may carry at most {MAX_ENTRIES} entries")
        if kind == "transaction":
            entries = [self._parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
            self.fhir.repo.write(lambda session: self._transaction(session, entries))
            return self._response("transaction-response", entries)
        return self._response("batch-response", [self._batch_entry(i, raw) for i, raw in enumerate(raw_entries)])

    # -- transaction ------------------------------------------------------------------------------------
    def _transaction(self, session: WriteSession, entries: list[Entry]) -> None:
        for entry in entries:  # a retried transaction starts afresh
            entry.response, entry.result, entry.resource = {}, None, entry.original
        self._check_duplicates(entries)
        self._touched: dict[str, int] = {}
        ids = self._assign_ids(entries)
        self._identify_conditional_updates(session, entries, ids)
        # Within POSTs, conditional creates go first: whether they match decides what their fullUrl means for
        # every other entry.  Entries with conditional references go last, so they can find resources created here.
        ordered = sorted(
            entries,
            key=lambda e: (
                _ORDER[e.method],
                not (e.method == "POST" and e.if_none_exist),
                has_conditional_refs(e.resource),
            ),
        )
        for entry in ordered:
            try:
                if entry.resource is not None:
                    entry.resource = self._rewrite(session, entry.resource, ids)
                self._execute(session, entry, ids)
            except FhirError as err:
                raise at_entry(entry, err) from None

    def _check_duplicates(self, entries: list[Entry]) -> None:
        seen: dict[str, int] = {}
        for entry in entries:
            if entry.method in ("PUT", "DELETE", "PATCH") and len(entry.path) == 2:
                key = "/".join(entry.path)
                if key in seen:
                    raise FhirError(
                        400,
                        "invalid",
                        f"Bundle.entry[{entry.index}] acts on {key}, as Bundle.entry[{seen[key]}] already does",
                        expression=[f"Bundle.entry[{entry.index}]"],
                    )
                seen[key] = entry.index

    def _assign_ids(self, entries: list[Entry]) -> dict[str, str]:
        """fullUrl → Type/id for every entry that creates or names a resource."""
        ids: dict[str, str] = {}
        for entry in entries:
            if entry.full_url is None:
                continue
            if entry.method == "POST" and len(entry.path) == 1:
                entry.result = new_id()
                ids[entry.full_url] = f"{entry.path[0]}/{entry.result}"
            elif entry.method == "PUT" and len(entry.path) == 2:
                ids[entry.full_url] = "/".join(entry.path)
        return ids

    def _identify_conditional_updates(self, session: WriteSession, entries: list[Entry], ids: dict[str, str]) -> None:
        """A conditional update's fullUrl means the resource its criteria match, or the one it will create: decided
        now, so entries processed before it (every POST) can refer to it.  Only for fullUrls something refers to:
        other Bundles are processed exactly as before."""
        referenced = reference_strings([e.resource for e in entries])
        for entry in entries:
            if entry.method != "PUT" or len(entry.path) != 1 or not entry.query or entry.full_url not in referenced:
                continue
            if not isinstance(entry.resource, dict):
                continue
            try:
                match = self.fhir.single_match_or_none(session, entry.path[0], entry.query, "conditional update")
            except FhirError as err:
                raise at_entry(entry, err) from None
            body_id = entry.resource.get("id")
            if match is not None and body_id is not None and body_id != match.id:
                refused = FhirError(400, "invalid", f"The body's id '{body_id}' is not the id of the matching resource")
                raise at_entry(entry, refused)
            target = match.id if match is not None else body_id or new_id()
            entry.resource = {**entry.resource, "id": target}
            ids[entry.full_url] = f"{entry.path[0]}/{target}"

    def _rewrite(self, session: WriteSession, node: Any, ids: dict[str, str]) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    out[key] = self._resolve_reference(session, value, ids)
                elif key == "div":
                    out[key] = value
                else:
                    out[key] = self._rewrite(session, value, ids)
            return out
        if isinstance(node, list):
            return [self._rewrite(session, item, ids) for item in node]
        if isinstance(node, str) and node in ids and node.startswith("urn:uuid:"):
            return ids[node]  # uri/canonical elements that name a Bundle resource by its fullUrl
        return node

    def _resolve_reference(self, session: WriteSession, reference: str, ids: dict[str, str]) -> str:
        if reference in ids:
            return ids[reference]
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            raise FhirError(400, "not-found", f"Reference '{reference[:80]}' names no entry of this Bundle")
        if "?" in reference and "/" not in reference.split("?", 1)[0]:
            resource_type, criteria = reference.split("?", 1)
            require_type(resource_type)
            match = self.fhir.single_match_or_none(session, resource_type, criteria, "conditional reference")
            if match is None:
                raise FhirError(404, "not-found", f"Conditional reference '{reference[:80]}' matches no resource")
            return f"{resource_type}/{match.id}"
        if reference.startswith(self.base + "/"):
            return reference[len(self.base) + 1 :]
        return reference

    def _execute(self, session: WriteSession, entry: Entry, ids: dict[str, str]) -> None:
        fhir, path = self.fhir, entry.path
        if entry.method == "DELETE":
            if len(path) == 2:
                deleted = fhir.delete(session, path[0], path[1])
            elif len(path) == 1 and entry.query:
                deleted = fhir.conditional_delete(session, path[0], entry.query)
            else:
                raise FhirError(400, "invalid", "DELETE needs Type/id or Type?criteria")
            entry.response = {"status": "204 No Content"}
            if deleted:
                self._touch(entry, deleted)
                entry.response["etag"] = deleted.etag
        elif entry.method == "POST":
            if len(path) != 1:
                raise FhirError(400, "invalid", "POST entries create resources: the url must be a resource type")
            result = fhir.create(
                session,
                path[0],
                entry.resource,
                if_none_exist=entry.if_none_exist,
                resource_id=entry.result if isinstance(entry.result, str) else None,
            )
            if result.existing and entry.full_url:
                # Conditional create matched: references to this entry now mean the existing resource.
                ids[entry.full_url] = f"{path[0]}/{result.stored.id}"
            self._written(entry, result)
        elif entry.method in ("PUT", "PATCH"):
            self._execute_update(session, entry)
        else:
            self._execute_read(session, entry)

    def _execute_update(self, session: WriteSession, entry: Entry) -> None:
        fhir, path = self.fhir, entry.path
        if entry.method == "PUT" and len(path) == 2:
            result = fhir.update(session, path[0], path[1], entry.resource, if_match=entry.if_match)
        elif entry.method == "PUT" and len(path) == 1 and entry.query:
            result = fhir.conditional_update(session, path[0], entry.query, entry.resource, if_match=entry.if_match)
        elif entry.method == "PATCH":
            operations = patch_operations(entry.resource)
            if len(path) == 2:
                result = fhir.patch(session, path[0], path[1], operations, if_match=entry.if_match)
            else:
                target = fhir.single_match(session, path[0], entry.query, "conditional patch")
                result = fhir.patch(session, path[0], target.id, operations, if_match=entry.if_match)
        else:
            raise FhirError(400, "invalid", f"{entry.method} needs Type/id or Type?criteria")
        self._written(entry, result)

    def _execute_read(self, session: WriteSession | None, entry: Entry) -> None:
        fhir, path = self.fhir, entry.path
        if len(path) == 2:
            stored = fhir.read(path[0], path[1]) if session is None else fhir.read_in(session, path[0], path[1])
            entry.response = {"status": "200 OK", **self._version(stored)}
            entry.result = stored
        elif len(path) == 4 and path[2] == "_history":
            stored = fhir.vread(path[0], path[1], path[3], session)
            entry.response = {"status": "200 OK", **self._version(stored)}
            entry.result = stored
        elif len(path) == 1:
            query = fhir.parse_query(path[0], parse_qsl(entry.query, keep_blank_values=True))
            result = fhir.search(query) if session is None else fhir.search_in(session, query)
            entry.response = {"status": "200 OK"}
            entry.result = searchset(self.base, path[0], result)
        else:
            raise FhirError(400, "not-supported", f"GET {entry.url[:80]} is not supported inside a Bundle")

    def _touch(self, entry: Entry, stored: Stored) -> None:
        """R4 §3.1.0.11.2: identities touched by DELETE/POST/PUT/PATCH, including resolved conditional ones,
        must not overlap within one transaction."""
        key = f"{stored.resource_type}/{stored.id}"
        earlier = getattr(self, "_touched", {}).get(key)
        if earlier is not None and earlier != entry.index:
            raise FhirError(400, "invalid", f"{key} is also the target of Bundle.entry[{earlier}]")
        if hasattr(self, "_touched"):
            self._touched[key] = entry.index

    def _written(self, entry: Entry, result: WriteResult) -> None:
        if not result.existing:
            self._touch(entry, result.stored)
        status = "200 OK" if result.existing or not result.created else "201 Created"
        stored = result.stored
        entry.response = {
            "status": status,
            "location": f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}",
            **self._version(stored),
        }
        entry.result = stored

    @staticmethod
    def _version(stored: Stored) -> dict[str, str]:
        return {"etag": stored.etag, "lastModified": stored.last_updated_iso}

    # -- batch ------------------------------------------------------------------------------------------
    def _batch_entry(self, index: int, raw: Any) -> Entry:
        try:
            entry = self._parse_entry(index, raw)
        except FhirError as err:
            entry = Entry(index, "GET", "", [], "")
            return self._failed(entry, err)
        try:
            if entry.method in ("GET", "HEAD"):
                self._execute_read(None, entry)
            else:
                self.fhir.repo.write(lambda session: self._execute(session, entry, {}))
        except FhirError as err:
            return self._failed(entry, err)
        return entry

    @staticmethod
    def _failed(entry: Entry, err: FhirError) -> Entry:
        entry.response = {
            "status": f"{err.status} {_REASONS.get(err.status, 'Error')}",
            "outcome": err.outcome(),
        }
        entry.result = None
        return entry

    # -- parsing and output -----------------------------------------------------------------------------
    def _parse_entry(self, index: int, raw: Any) -> Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise FhirError(400, "required", f"{where} has no request", expression=[f"{where}.request"])
        request = raw["request"]
        method, url = request.get("method"), request.get("url")
        if method not in _ORDER or not isinstance(url, str) or not url:
            raise FhirError(400, "invalid", f"{where}.request needs a method (GET/POST/PUT/PATCH/DELETE) and a url")
        relative = url[len(self.base) + 1 :] if url.startswith(self.base + "/") else url.lstrip("/")
        split = urlsplit(relative)
        path = [p for p in split.path.split("/") if p]
        if not path:
            raise FhirError(400, "invalid", f"{where}.request.url '{url[:80]}' names no resource type")
        require_type(path[0])
        resource = raw.get("resource")
        if method in ("POST", "PUT", "PATCH") and not isinstance(resource, dict):
            raise FhirError(400, "required", f"{where} ({method}) needs a resource", expression=[f"{where}.resource"])
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        return Entry(
            index,
            method,
            url,
            path,
            split.query,
            resource,
            full_url,
            if_none_exist=request.get("ifNoneExist"),
            if_match=request.get("ifMatch"),
            original=resource,
        )

    def _response(self, kind: str, entries: list[Entry]) -> dict[str, Any]:
        out = []
        for entry in entries:
            item: dict[str, Any] = {}
            if isinstance(entry.result, Stored) and (self.return_resources or entry.method == "GET"):
                item["resource"] = fragment(entry.result)
            elif isinstance(entry.result, dict):
                item["resource"] = entry.result
            item["response"] = entry.response
            out.append(item)
        return {
            "resourceType": "Bundle",
            "type": kind,
            "meta": {"lastUpdated": instant(utc_now())},
            "entry": out,
        }


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    503: "Service Unavailable",
}

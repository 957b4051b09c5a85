"""Bundle rules HL7's validator checks beyond structure and the bdl-* invariants (R4 bundle.html, documents.html,
messaging.html, http.html#transaction).

- ``entry.fullUrl`` is absolute; when it looks like a RESTful URL it ends with the entry's type and id; a canonical
  resource's ``url`` is only its fullUrl when that is so; it is present except where R4 lets it be left out;
- ``link``: search relations (first/previous/next/last) only in searchsets and histories, each relation once;
- searchset: ``match`` and ``include`` entries have ids, ``match`` entries are of the searched type, ``outcome``
  entries are OperationOutcomes;
- document: the Composition's subject, authors, encounter, custodian, attesters, event details and section
  references resolve in the Bundle, and every entry is reachable from the Composition;
- message: the MessageHeader's focus resolves in the Bundle;
- document and message: no reference in any entry matches two entries, or matches one by type and id that the
  fullUrl rules below do not reach; transaction: every urn:uuid reference names an entry.

References resolve as R4 bundle.html#references says: an absolute one against the fullUrls; a relative ``Type/id``
against the fullUrl of the entry that holds it (its base + the reference) when that fullUrl is RESTful, and not at
all otherwise; ``…/_history/n`` only against the entry whose meta.versionId is n.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import fhir_server.validation.definitions as definitions
from fhir_server.errors import Issue
from fhir_server.validation.local_refs import nested_resources, references

# R4 references.html#regex, with the base optional as HL7 has it ("Composition/1" is RESTful for resolution).
_RESTFUL = re.compile(
    r"(?P<base>https?://(?:[A-Za-z0-9\\.:%$_\-]*/)*)?(?P<type>[A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?"
)
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
_SEARCH_LINKS = ("first", "previous", "next", "last")
_TRANSACTIONS = ("transaction", "transaction-response", "batch", "batch-response")
# Types whose entries are the identity of what they carry: R4 lets a fullUrl be missing only on a POST and in the
# results of searches and operations.
_FULL_URL_REQUIRED = ("document", "message", "collection")
# An absolute reference to one of these need not be in the Bundle: it is a definition, not content (HL7 too).
_CANONICAL_TYPES = frozenset(
    {
        *("ActivityDefinition", "CapabilityStatement", "ChargeItemDefinition", "CodeSystem", "CompartmentDefinition"),
        *("ConceptMap", "EffectEvidenceSynthesis", "EventDefinition", "Evidence", "EvidenceVariable"),
        *("ExampleScenario", "GraphDefinition", "ImplementationGuide", "Library", "Measure", "MessageDefinition"),
        *("NamingSystem", "OperationDefinition", "PlanDefinition", "Questionnaire", "ResearchDefinition"),
        *("ResearchElementDefinition", "RiskEvidenceSynthesis", "SearchParameter", "StructureDefinition"),
        *("StructureMap", "TerminologyCapabilities", "TestScript", "ValueSet"),
    }
)


def bundle_issues(resource: dict[str, Any], path: str | None = None) -> list[Issue]:
    """Issues of ``resource`` if it is a Bundle, and of every Bundle inside it (entries, parameters, contained)."""
    issues: list[Issue] = []
    if not isinstance(resource, dict):
        return issues
    path = path or str(resource.get("resourceType"))
    if resource.get("resourceType") == "Bundle":
        issues += _BundleCheck(resource, path).run()
    for inner_path, inner in nested_resources(resource, path):
        issues += bundle_issues(inner, inner_path)
    return issues


def restful(url: str) -> re.Match[str] | None:
    """The parts of ``url`` when it has the form of a RESTful URL ([base/]Type/id[/_history/v], Type an R4 type)."""
    match = _RESTFUL.fullmatch(url)
    return match if match and definitions.is_resource(match["type"]) else None


def is_absolute(url: str) -> bool:
    """A URI with a scheme (as HL7 reads it: lowercase, and something after the colon, without spaces)."""
    scheme, colon, rest = url.partition(":")
    return bool(colon) and bool(_SCHEME.fullmatch(scheme)) and bool(rest) and " " not in rest


@dataclass
class _Entry:
    index: int
    raw: dict[str, Any]
    full_url: str | None
    resource: dict[str, Any] | None
    targets: set[int] = field(default_factory=set)  # entries its references resolve to (for reachability)

    @property
    def type_id(self) -> str | None:
        if self.resource is None or not isinstance(self.resource.get("id"), str):
            return None
        return f"{self.resource.get('resourceType')}/{self.resource['id']}"


class _BundleCheck:
    def __init__(self, bundle: dict[str, Any], path: str) -> None:
        self.bundle, self.path, self.issues = bundle, path, []
        self.type = bundle.get("type") if isinstance(bundle.get("type"), str) else ""
        self.entries = [
            _Entry(i, e, _string(e.get("fullUrl")), e["resource"] if isinstance(e.get("resource"), dict) else None)
            for i, e in enumerate(_list(bundle.get("entry")))
            if isinstance(e, dict)
        ]
        self.by_index = {entry.index: entry for entry in self.entries}
        # fullUrl (and fullUrl/_history/v for the entry of that meta.versionId) → entries; Type/id → entries, only
        # to explain why a relative reference did not resolve
        self.by_url: dict[str, list[int]] = {}
        self.by_type_id: dict[str, list[int]] = {}
        for entry in self.entries:
            meta = entry.resource.get("meta") if entry.resource else None
            version = _string(meta.get("versionId")) if isinstance(meta, dict) else None
            if entry.full_url is not None:
                self.by_url.setdefault(entry.full_url, []).append(entry.index)
                if version:
                    self.by_url.setdefault(f"{entry.full_url}/_history/{version}", []).append(entry.index)
            if entry.type_id is not None:
                self.by_type_id.setdefault(entry.type_id, []).append(entry.index)
        self.reported: set[str] = set()  # reference paths already given an error: one error per reference

    def run(self) -> list[Issue]:
        self._links()
        for entry in self.entries:
            self._full_url(entry)
        if self.type in ("document", "message"):
            self._document_or_message()
        elif self.type == "searchset":
            self._searchset()
        elif self.type == "transaction":
            # a urn:uuid means something only inside this Bundle: the server cannot process one naming no entry
            for entry in self.entries:
                for where, ref, kind in references(entry.resource or {}, self._at(entry, ".resource")):
                    if kind == "Reference" and ref.startswith("urn:uuid:") and ref.split("#")[0] not in self.by_url:
                        self._error("not-found", where, f"Can't find '{ref}' in the bundle")
        return self.issues

    def _error(self, code: str, where: str, message: str) -> None:
        self.issues.append(Issue(code, f"{where}: {message}", expression=[where]))

    def _at(self, entry: _Entry, tail: str = "") -> str:
        return f"{self.path}.entry[{entry.index}]{tail}"

    def _links(self) -> None:
        paged = self.type in ("searchset", "history")
        seen: set[str] = set()
        for i, link in enumerate(_list(self.bundle.get("link"))):
            relation = link.get("relation") if isinstance(link, dict) else None
            if not isinstance(relation, str) or not self.type:
                continue
            where = f"{self.path}.link[{i}].relation"
            if relation in _SEARCH_LINKS and not paged:
                message = f"The link relationship type '{relation}' is only allowed in search sets and histories"
                self._error("invalid", where, message)
            # a page has one of each; any Bundle has one self (HL7 checks exactly these)
            if relation in seen and (relation == "self" or (paged and relation in _SEARCH_LINKS)):
                self._error("invalid", where, f"The link relationship type '{relation}' can only occur once")
            seen.add(relation)
            url = link.get("url")
            stylesheet = relation == "stylesheet" and self.type == "document" and isinstance(url, str)
            if stylesheet and not is_absolute(url) and url not in self.by_type_id:
                self._error("not-found", where, f"The stylesheet reference '{url}' is not in this bundle")

    def _full_url(self, entry: _Entry) -> None:
        full_url, resource = entry.full_url, entry.resource
        where = self._at(entry, ".fullUrl")
        if full_url is None:
            if resource is not None and self.type in _FULL_URL_REQUIRED:
                self._error("invalid", self._at(entry), f"Each entry of a {self.type} must have a fullUrl")
            return
        if not is_absolute(full_url):
            self._error("invalid", where, f"The fullUrl must be an absolute URL (not '{full_url}')")
            return
        if resource is None:
            return
        resource_id, resource_type = resource.get("id"), resource.get("resourceType")
        if restful(full_url):
            request = entry.raw.get("request")
            # a resource being created has no id yet: its fullUrl is a placeholder (http.html#transaction)
            posted = self.type in _TRANSACTIONS and isinstance(request, dict) and request.get("method") == "POST"
            if not isinstance(resource_id, str) and not posted:
                message = f"The fullUrl '{full_url}' looks like a RESTful server URL, but the resource has no id"
                self._error("invalid", where, message)
            elif isinstance(resource_id, str) and not full_url.endswith(f"/{resource_type}/{resource_id}"):
                message = f"The fullUrl '{full_url}' looks like a RESTful server URL, so it must end with the correct"
                self._error("invalid", where, f"{message} type and id (/{resource_type}/{resource_id})")
        url = resource.get("url")
        if url == full_url and not (restful(url) and url.endswith(f"/{resource_id}")):
            message = f"The canonical URL ({url}) cannot be the fullUrl unless it ends with the resource id too"
            self._error("invalid", where, message)

    def resolve(self, reference: str, source: _Entry) -> tuple[list[int], tuple[str, str] | None]:
        """The entries ``reference`` (held by ``source``) resolves to, and why not (issue code, message)."""
        reference = reference.split("#")[0]
        if is_absolute(reference):
            found = self.by_url.get(reference, [])
            match = restful(reference)
            if not found and not (match and match["type"] in _CANONICAL_TYPES):
                return [], ("not-found", f"Can't find '{reference}' in the bundle")
        else:
            base = self._base(source)
            found = self.by_url.get(base + reference, []) if base is not None else []
            match = restful(reference)
            if not found and match is not None:  # not Type/id: R4 gives it no meaning inside a Bundle
                same = self.by_type_id.get(f"{match['type']}/{match['id']}", [])
                if not same:
                    return [], ("not-found", f"Can't find '{reference}' in the bundle")
                urls = ", ".join(sorted({str(self.by_index[i].full_url) for i in same}))
                rule = (
                    f"it would be {base + reference}"
                    if base
                    else f"{source.full_url} is no RESTful URL of its resource"
                )
                message = (
                    f"Can't find '{reference}' in the bundle: entries of that type and id ({urls}) are not found "
                    f"from the fullUrl of the entry that holds the reference ({rule})"
                )
                return [], ("invalid", message)
        if len(found) > 1:
            return found, ("invalid", f"Found {len(found)} matches for '{reference}' in the bundle")
        return found, None

    @staticmethod
    def _base(source: _Entry) -> str | None:
        """The base a relative reference in ``source`` resolves against: its fullUrl less Type/id, if RESTful."""
        resource = source.resource or {}
        if source.full_url is None or not restful(source.full_url) or not isinstance(resource.get("id"), str):
            return None
        tail = f"{resource.get('resourceType')}/{resource['id']}"
        return source.full_url[: -len(tail)] if source.full_url.endswith(tail) else None

    def _must_resolve(self, source: _Entry, where: str, reference: Any) -> None:
        """An error unless the Reference at ``where`` names exactly one entry (or is logical, or contained)."""
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(ref, str) and ref and not ref.startswith("#"):
            _, problem = self.resolve(ref, source)
            if problem is not None:
                self.reported.add(f"{where}.reference")
                self._error(problem[0], f"{where}.reference", problem[1])

    def _document_or_message(self) -> None:
        if not self.entries:
            self._error("invalid", self.path, "Documents or Messages must contain at least one entry")
            return
        first = self.entries[0]
        if first.resource is None:
            self._error("invalid", self._at(first), "No resource on first entry")
            return
        where = self._at(first, ".resource")
        head = first.resource.get("resourceType")
        if self.type == "document" and head == "Composition":
            self._composition(first, first.resource, where)
        elif self.type == "message" and head == "MessageHeader":
            for i, focus in enumerate(_list(first.resource.get("focus"))):
                self._must_resolve(first, f"{where}.focus[{i}]", focus)
        # Elsewhere a reference may point outside the Bundle ("not-found" is only HL7's warning), but not at two
        # entries, nor at an entry the fullUrl rules do not reach.
        for entry in self.entries:
            for path, ref, kind in references(entry.resource or {}, self._at(entry, ".resource")):
                found, problem = self.resolve(ref, entry)
                entry.targets.update(found)
                if kind == "Reference" and problem and problem[0] == "invalid" and path not in self.reported:
                    self._error(problem[0], path, problem[1])
        if self.type == "document" and head == "Composition":
            self._reachable()

    def _composition(self, source: _Entry, composition: dict[str, Any], where: str) -> None:
        # documents.html: what these name is part of the document, so it is in the Bundle
        for name in ("subject", "author", "encounter", "custodian"):
            self._each(source, composition, name, where)
        for name, inner in (("attester", "party"), ("event", "detail")):
            for i, item in enumerate(_list(composition.get(name))):
                if isinstance(item, dict):
                    self._each(source, item, inner, f"{where}.{name}[{i}]")
        self._sections(source, composition, where)

    def _sections(self, source: _Entry, node: dict[str, Any], where: str) -> None:
        for i, section in enumerate(_list(node.get("section"))):
            if isinstance(section, dict):
                for name in ("author", "focus", "entry"):
                    self._each(source, section, name, f"{where}.section[{i}]")
                self._sections(source, section, f"{where}.section[{i}]")

    def _each(self, source: _Entry, node: dict[str, Any], name: str, where: str) -> None:
        value = node.get(name)
        if isinstance(value, list):
            for i, reference in enumerate(value):
                self._must_resolve(source, f"{where}.{name}[{i}]", reference)
        else:
            self._must_resolve(source, f"{where}.{name}", value)

    def _reachable(self) -> None:
        """Every entry of a document is linked with the Composition, forwards or backwards (R4 documents.html)."""
        present = {e.index: e for e in self.entries if e.resource is not None}
        visited: set[int] = set()

        def visit(index: int) -> None:
            pending = [index]
            while pending:
                current = pending.pop()
                if current in present and current not in visited:
                    visited.add(current)
                    pending.extend(present[current].targets)

        visit(self.entries[0].index)
        for link in _list(self.bundle.get("link")):
            if isinstance(link, dict) and link.get("relation") == "stylesheet":
                for index in self.by_type_id.get(str(link.get("url")), []):
                    visit(index)
        grown = True
        while grown:  # a Provenance (say) that points at the Composition is reached backwards
            grown = False
            for entry in present.values():
                if entry.index not in visited and entry.targets & visited:
                    visit(entry.index)
                    grown = True
        for entry in present.values():
            if entry.index not in visited:
                label = f"'{entry.full_url}' " if entry.full_url else ""
                message = f"Entry {label}isn't reachable by traversing links (forward or backward) from the Composition"
                self._error("invalid", self._at(entry), message)

    def _searchset(self) -> None:
        modes = [_string(_dict(e.raw.get("search")).get("mode")) for e in self.entries]
        if not any(modes):
            return  # without modes nothing says which entries are matches: HL7 only warns
        types = _searched_types(self.bundle)
        for entry, mode in zip(self.entries, modes, strict=True):
            if entry.resource is None or mode is None:
                continue
            where, resource_type = self._at(entry, ".resource"), entry.resource.get("resourceType")
            if mode in ("match", "include") and not isinstance(entry.resource.get("id"), str):
                self._error("invalid", where, "Search results must have ids")
            if mode == "match" and types and resource_type not in types:
                expected = ", ".join(types)
                message = f"This is not a matching resource type for the search ({resource_type} expecting {expected})"
                self._error("invalid", where, message)
            if mode == "outcome" and resource_type != "OperationOutcome":
                self._error("invalid", where, f"This is not an OperationOutcome ({resource_type})")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _searched_types(bundle: dict[str, Any]) -> list[str]:
    """The resource types the self link searched: its last path segment, or its _type parameter."""
    links = [link for link in _list(bundle.get("link")) if isinstance(link, dict) and link.get("relation") == "self"]
    url = _string(links[0].get("url")) if links else None
    if url is None:
        return []
    head, _, query = url.partition("?")
    last = head.rstrip("/").rsplit("/", 1)[-1]
    if definitions.is_resource(last):
        return [last]
    for parameter in query.split("&"):
        name, _, value = parameter.partition("=")
        if name == "_type":
            return [t for t in unquote(value).split(",") if t]
    return []

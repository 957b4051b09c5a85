"""A ``$export`` kick-off, parsed and checked before a job is queued (Bulk Data Access 2.0, "Query Parameters").

Everything a job needs later is decided here and kept in the job row (``to_json``): the types, in the order they
are written, ``_since``, the ``_typeFilter`` queries per type (checked now against the search registry and the
caller's scopes, parsed again when the job runs), ``_elements`` and associated Provenance.  A request the server
cannot honour in full is refused with an OperationOutcome; with ``Prefer: handling=lenient`` the parts it cannot
honour (unknown or unauthorised types, unsupported ``includeAssociatedData`` values, unknown parameters) are left
out instead and reported in the job's error file.  ``patient`` is always refused: leaving it out would export more
patients than were asked for.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

import orjson

from fhir_server import models
from fhir_server.auth.policy import Policy
from fhir_server.engine.admission import NOT_ACCEPTED
from fhir_server.errors import FhirError
from fhir_server.search.compartments import compartment_types
from fhir_server.search.fhirdate import DateFormatError, parse_range
from fhir_server.search.query import RESULT_PARAMS, parse_search
from fhir_server.search.registry import Registry

LEVELS = ("system", "patient", "group")
NDJSON_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
RELEVANT_PROVENANCE = "RelevantProvenanceResources"
# Kept out unless asked for by name: audit records are about access, not a patient's record ($everything leaves
# them out too), and a Binary tied to a patient would have to go out as a DocumentReference (Bulk Data 2.0).
NOT_BY_DEFAULT = frozenset({"AuditEvent"})
NOT_EXPORTED = frozenset({"Binary", *NOT_ACCEPTED})
KNOWN = {"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "includeAssociatedData", "patient"}
HTTP_ONLY = {"_format", "_pretty"}  # about the kick-off's own answer, not the export
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_QUERY_START = re.compile(r",(?=[A-Z][A-Za-z]*\?)")  # a comma that starts another Type?query
_ELEMENT = re.compile(r"(?:([A-Z][A-Za-z]*)\.)?([a-z][A-Za-z0-9]*)")


@dataclass(frozen=True)
class ExportRequest:
    level: str  # system | patient | group
    group_id: str | None
    types: tuple[str, ...]  # exported in this order, one file each
    since: datetime | None = None  # naive UTC: resources changed after it
    type_filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)  # type → OR of queries
    elements: dict[str, list[str]] = field(default_factory=dict)  # type ("*": every type) → element names
    # Provenance is exported only as associated data (includeAssociatedData=RelevantProvenanceResources without
    # Provenance among the types): only the Provenance of the resources exported (export/queries.py).
    provenance_by_association: bool = False
    notes: tuple[str, ...] = ()  # what lenient handling left out: the job's error file

    def to_json(self) -> str:
        values = asdict(self)
        values["since"] = self.since.isoformat() if self.since else None
        return orjson.dumps(values).decode()

    @classmethod
    def from_json(cls, text: str) -> ExportRequest:
        values = orjson.loads(text)
        since = values.get("since")
        filters = {t: [[(k, v) for k, v in q] for q in qs] for t, qs in values.get("type_filters", {}).items()}
        return cls(
            level=values["level"],
            group_id=values.get("group_id"),
            types=tuple(values["types"]),
            since=datetime.fromisoformat(since) if since else None,
            type_filters=filters,
            elements=values.get("elements", {}),
            provenance_by_association=bool(values.get("provenance_by_association")),
            notes=tuple(values.get("notes", ())),
        )


class _Parser:
    def __init__(self, params: list[tuple[str, str]], policy: Policy, registry: Registry, lenient: bool) -> None:
        self.params, self.policy, self.registry, self.lenient = params, policy, registry, lenient
        self.notes: list[str] = []

    def refuse_or_note(self, error: FhirError) -> None:
        """Lenient handling notes what it leaves out; otherwise the request is refused."""
        if not self.lenient:
            raise error
        self.notes.append(str(error))

    def values(self, name: str) -> list[str]:
        """A parameter's values: repeated parameters and comma-separated lists alike (Bulk Data 2.0)."""
        return [v.strip() for raw in self.all(name) for v in raw.split(",") if v.strip()]

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]

    def one(self, name: str) -> str | None:
        found = self.all(name)
        if len(found) > 1:
            raise FhirError(400, "invalid", f"$export: '{name}' may be given only once")
        return found[0] if found else None


def parse_request(
    level: str,
    group_id: str | None,
    params: list[tuple[str, str]],
    *,
    policy: Policy,
    registry: Registry,
    lenient: bool = False,
    posted_patient: bool = False,
) -> ExportRequest:
    """The kick-off's parameters (query string and Parameters alike) as a job; a FhirError when refused."""
    parser = _Parser(params, policy, registry, lenient)
    if posted_patient or parser.all("patient"):
        raise FhirError(400, "not-supported", "$export: the 'patient' parameter is not supported; export a Group")
    for name in sorted({k for k, _ in params} - KNOWN - HTTP_ONLY):
        parser.refuse_or_note(FhirError(400, "not-supported", f"$export: unknown parameter '{name[:64]}'"))
    output_format = parser.one("_outputFormat")
    if output_format is not None and output_format not in NDJSON_FORMATS:
        raise FhirError(400, "not-supported", "$export: _outputFormat must be application/fhir+ndjson (or ndjson)")
    types = _types(parser, level)
    filters = _type_filters(parser, types)
    by_association = _associated(parser) and "Provenance" not in types
    if by_association:
        types = (*types, "Provenance")  # written last: its query follows the other types' (export/queries.py)
    if not types:
        raise FhirError(403, "forbidden", "$export: the access token allows reading none of the types asked for")
    return ExportRequest(
        level=level,
        group_id=group_id,
        types=types,
        since=_since(parser.one("_since")),
        type_filters=filters,
        elements=_elements(parser, types),
        provenance_by_association=by_association,
        notes=tuple(parser.notes),
    )


def exportable_types(level: str) -> list[str]:
    """What an export at this level may hold: every stored type, or the Patient compartment's."""
    if level == "system":
        return sorted(t for t in models.R4_RESOURCE_TYPES if t not in NOT_EXPORTED)
    members = ["Patient", *compartment_types("Patient")]  # the patients themselves first
    return [t for t in dict.fromkeys(members) if t not in NOT_EXPORTED]


def _types(parser: _Parser, level: str) -> tuple[str, ...]:
    allowed = exportable_types(level)
    asked = list(dict.fromkeys(parser.values("_type")))
    if not asked:  # everything the token may read, within the level
        readable = [t for t in allowed if t not in NOT_BY_DEFAULT and parser.policy.allows(t, "r")]
        return tuple(readable)
    kept = []
    for resource_type in asked:
        if not models.is_resource_type(resource_type) or resource_type in NOT_EXPORTED:
            parser.refuse_or_note(FhirError(400, "not-supported", f"$export: cannot export '{resource_type[:64]}'"))
        elif resource_type not in allowed:
            where = "outside the Patient compartment" if level != "system" else "not exported"
            parser.refuse_or_note(FhirError(400, "not-supported", f"$export: {resource_type} is {where}"))
        elif not parser.policy.allows(resource_type, "r"):
            parser.refuse_or_note(
                FhirError(403, "forbidden", f"$export: the access token's scopes do not allow reading {resource_type}")
            )
        else:
            kept.append(resource_type)
    if not kept:
        raise FhirError(400, "not-supported", "$export: none of the types in _type can be exported")
    return tuple(kept)


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    if not _INSTANT.fullmatch(raw.strip()):
        raise FhirError(400, "value", "$export: _since must be a FHIR instant (2026-01-01T00:00:00Z)")
    try:
        return parse_range(raw.strip())[0]
    except DateFormatError as exc:
        raise FhirError(400, "value", f"$export: _since: {exc}") from None


def _type_filters(parser: _Parser, types: tuple[str, ...]) -> dict[str, list[list[tuple[str, str]]]]:
    """``Type?param=value&...`` queries, ORed per type; run by the search engine (so checked by it now)."""
    filters: dict[str, list[list[tuple[str, str]]]] = {}
    for raw in parser.all("_typeFilter"):
        for query in (q.strip() for q in _QUERY_START.split(raw) if q.strip()):
            resource_type, mark, text = query.partition("?")
            params = parse_qsl(text, keep_blank_values=True)
            if not mark or not params:
                raise FhirError(400, "invalid", f"$export: _typeFilter '{query[:80]}' is not Type?query")
            if resource_type not in types:
                parser.refuse_or_note(
                    FhirError(400, "invalid", f"$export: _typeFilter names {resource_type[:64]}, which is not exported")
                )
                continue
            shaping = sorted({k.partition(":")[0] for k, _ in params} & RESULT_PARAMS)
            if shaping:
                raise FhirError(400, "invalid", f"$export: _typeFilter may not use {', '.join(shaping)}")
            query_object = parse_search(resource_type, params, parser.registry, strict=True)
            parser.policy.confine(query_object, "r")  # chains and _has need search scopes on what they reach
            filters.setdefault(resource_type, []).append(params)
    return filters


def _elements(parser: _Parser, types: tuple[str, ...]) -> dict[str, list[str]]:
    elements: dict[str, list[str]] = {}
    for value in parser.values("_elements"):
        match = _ELEMENT.fullmatch(value)
        if match is None:
            raise FhirError(400, "value", f"$export: _elements '{value[:64]}' is not [Type.]element")
        resource_type, element = match.group(1) or "*", match.group(2)
        if resource_type != "*" and resource_type not in types:
            parser.refuse_or_note(
                FhirError(400, "invalid", f"$export: _elements names {resource_type}, which is not exported")
            )
            continue
        elements.setdefault(resource_type, []).append(element)
    return elements


def _associated(parser: _Parser) -> bool:
    """``includeAssociatedData``: all Provenance of the exported resources is what this server can give; the
    most recent one per resource it cannot tell apart, so that value is refused (least restrictive wins)."""
    asked = set(parser.values("includeAssociatedData"))
    if not asked:
        return False
    if RELEVANT_PROVENANCE in asked:
        asked.discard("LatestProvenanceResources")
    for value in sorted(asked - {RELEVANT_PROVENANCE}):
        parser.refuse_or_note(FhirError(400, "not-supported", f"$export: includeAssociatedData={value[:64]}"))
    if RELEVANT_PROVENANCE not in asked:
        return False
    if not parser.policy.allows("Provenance", "r"):
        parser.refuse_or_note(FhirError(403, "forbidden", "$export: the access token may not read Provenance"))
        return False
    return True

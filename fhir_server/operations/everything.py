"""Patient/{id}/$everything (FHIR R4 Patient-everything): the patient and every resource in its compartment,
optionally only since ``_since`` and of the types in ``_type``, paged by ``_count``.  At type level
(``Patient/$everything``) the patient is the access token's launch patient; any other caller is asked to name one,
as the definition allows ("the server may choose to return an error rather than all the records")."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.errors import FhirError
from fhir_server.operations.base import HL7, OperationContext, standard
from fhir_server.search.compartments import compartment_clause, compartment_types
from fhir_server.search.query import Clause, SearchQuery
from fhir_server.search.types.date import parse as parse_date
from fhir_server.store.records import instant, utc_now
from fhir_server.store.search_sql import decode_cursor, encode_cursor


def everything(ctx: OperationContext) -> dict[str, Any]:
    fhir = ctx.fhir
    if ctx.resource_type != "Patient":
        raise FhirError(400, "not-supported", "$everything is defined on Patient")
    unsupported = sorted({k for k, _ in ctx.params} & {"start", "end", "_offset"})
    if unsupported:  # refused rather than ignored: the caller would take the whole record for the range it asked
        raise FhirError(400, "not-supported", f"$everything does not support {', '.join(unsupported)} here")
    patient_id = ctx.resource_id or _launch_patient(ctx)
    patient = fhir.read("Patient", patient_id)  # 404/410 as for a read
    types = _types(ctx)
    count = _count(ctx, fhir.settings.default_page_size, fhir.settings.max_page_size)
    since = ctx.one("_since")
    registry = fhir.registry
    since_clause = []
    if since:
        last_updated = registry.get("Patient", "_lastUpdated")
        try:
            since_clause = [Clause(last_updated, (parse_date("ge" + since, None),))]
        except ValueError as exc:
            raise FhirError(400, "value", f"Invalid _since: {exc}") from None

    # The cursor says which member type we are in and where in it; the Patient itself leads the first page.
    type_index, inner_cursor = 0, None
    raw_cursor = fhir.policy.unseal(ctx.one("_cursor"))
    if raw_cursor:
        values, _ = decode_cursor(raw_cursor)
        if len(values) != 2 or not isinstance(values[0], int):
            raise FhirError(400, "value", "The paging cursor is invalid")
        type_index, inner_cursor = values
    entries: list[dict[str, Any]] = []
    if not raw_cursor and "Patient" in types:
        entries.append(_entry(ctx.base_url, "Patient", patient.id, patient.content))
    # Audit records are about the patient but are not the patient's record; types the token cannot search are
    # left out rather than refused, as a partial $everything is what the caller's grant allows.
    members = [
        t for t in compartment_types("Patient") if t in types and t != "AuditEvent" and fhir.policy.allows(t, "s")
    ]
    next_cursor = None
    while type_index < len(members) and len(entries) < count:
        member = members[type_index]
        query = SearchQuery(
            member,
            clauses=[compartment_clause(registry, "Patient", patient_id, member), *since_clause],
            count=count - len(entries),
            cursor=inner_cursor,
        )
        outcome = fhir.search(query).outcome
        entries += [_entry(ctx.base_url, s.resource_type, s.id, s.content) for s in outcome.matches]
        if outcome.next_cursor:
            # the member search's cursor goes out sealed; it is kept plain inside ours, which is sealed below
            next_cursor = encode_cursor([type_index, fhir.policy.unseal(outcome.next_cursor)])
            break
        type_index, inner_cursor = type_index + 1, None
    if next_cursor is None and type_index < len(members) and len(entries) >= count:
        next_cursor = encode_cursor([type_index, inner_cursor])  # the page filled up between member types
    next_cursor = fhir.policy.seal(next_cursor)
    query = urlencode(ctx.params)
    links = [{"relation": "self", "url": f"{ctx.base_url}/{ctx.path}" + (f"?{query}" if query else "")}]
    if next_cursor:
        kept = urlencode([(k, v) for k, v in ctx.params if k != "_cursor"] + [("_cursor", next_cursor)])
        links.append({"relation": "next", "url": f"{ctx.base_url}/{ctx.path}?{kept}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": instant(utc_now())},
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _launch_patient(ctx: OperationContext) -> str:
    patient = ctx.fhir.policy.patient
    if patient is None:
        raise FhirError(
            400,
            "too-costly",
            "Patient/$everything without a patient is every patient's record: name the patient "
            "(Patient/[id]/$everything); at type level it answers for a patient-context token's own patient",
        )
    return patient


def _types(ctx: OperationContext) -> set[str]:
    raw = [v for k, v in ctx.params if k == "_type"]
    allowed = {"Patient", *compartment_types("Patient")}
    if not raw:
        return allowed
    asked = {t.strip() for value in raw for t in value.split(",") if t.strip()}
    unknown = asked - allowed
    if unknown:
        raise FhirError(
            400, "value", f"_type names types outside the Patient compartment: {', '.join(sorted(unknown))}"
        )
    return asked


def _count(ctx: OperationContext, default: int, maximum: int) -> int:
    raw = ctx.one("_count")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise FhirError(400, "value", "_count must be a positive integer")
    return min(int(raw), maximum)


def _entry(base: str, resource_type: str, resource_id: str, content: str | None) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{resource_type}/{resource_id}",
        "resource": orjson.Fragment((content or "{}").encode()),
        "search": {"mode": "match"},
    }


OPERATION = standard(
    "everything",
    everything,
    canonicals={"*": f"{HL7}/Patient-everything"},
    resources=["Patient"],
    levels={"type", "instance"},
    documentation="`_since`, `_type` and `_count` (paged: follow the `next` link); `start`, `end` and `_offset` "
    "are refused (not supported).  At type level only for a patient-context token (its own patient); any other "
    "caller names the patient.  Types the token cannot search are left out, and so are AuditEvents.",
    reveals=("Patient",),
)

"""``Measure/[id]/$evaluate-measure`` and ``Measure/$evaluate-measure``: supervisors' indicators (indicators/,
reporting/) for a period, as R4 MeasureReports.

R4's parameters: ``periodStart`` and ``periodEnd`` (required; a date at any precision, the period covering both
whole), ``reportType`` (``population``/``summary``, the default, or ``subject-list``; an individual client's report
is not what these indicators are for: 400), ``subject`` (an Organization, Practitioner or PractitionerRole; a
Patient is refused) or ``practitioner``, and ``measure`` at type level.  At type level without ``measure`` the
answer is a ``collection`` Bundle of every indicator's report (as R5's ``Measure/$evaluate`` answers several).

Access: reporting/access.py.  ``subject-list`` names clients, so it also needs a read scope on Patient.  Every run
is audited (who, which report, the request) without naming any client.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.ids import new_id
from fhir_server.operations.base import OperationContext, standard
from fhir_server.reporting.access import scope_for
from fhir_server.reporting.evaluate import Request, evaluate, make_request
from fhir_server.reporting.indicators import Indicator
from fhir_server.reporting.scope import Window
from fhir_server.search.fhirdate import DateFormatError, parse_range
from fhir_server.store.report_connections import report_connections

HL7 = "http://hl7.org/fhir/OperationDefinition"
REPORT_TYPES = {"population": "summary", "summary": "summary", "subject-list": "subject-list"}
_TICK = timedelta(microseconds=1)


def evaluate_measure(ctx: OperationContext) -> dict[str, Any]:
    fhir = ctx.fhir
    indicators = _indicators(ctx)
    request = _request(ctx)
    if request.report_type == "subject-list":
        fhir.policy.require("Patient", "r")  # the lists name clients
    with report_connections(fhir.repo.read_engine, fhir.settings.report_connections) as connections:
        reports = evaluate(connections, indicators, request)
    fhir.record_operation(
        "evaluate-measure",
        f"$evaluate-measure {', '.join(i.id for i in indicators)} {request.period[0]}..{request.period[1]}"
        f"{' for ' + request.subject if request.subject else ''} ({request.report_type})",
        ctx.request_url,
    )
    if len(reports) == 1 and (ctx.resource_id or ctx.one("measure")):
        return reports[0]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{new_id()}", "resource": report} for report in reports],
    }


def _indicators(ctx: OperationContext) -> list[Indicator]:
    library = ctx.fhir.library
    if ctx.resource_id is not None:
        measure = fhirjson.loads_stored(ctx.fhir.read("Measure", ctx.resource_id).content or "{}")  # 404 as a read
        found = library.indicator(f"{measure.get('url')}|{measure.get('version')}")
        if found is None:
            raise FhirError(422, "not-supported", f"Measure/{ctx.resource_id} is not one of this server's indicators")
        return [found]
    wanted = ctx.one("measure")
    if wanted:
        found = library.indicator(wanted.removeprefix("Measure/"))
        if found is None:
            raise FhirError(404, "not-found", f"No indicator '{wanted[:200]}' (Measure id, url or url|version)")
        return [found]
    return list(library.indicators)


def _request(ctx: OperationContext) -> Request:
    start, end = ctx.one("periodStart"), ctx.one("periodEnd")
    if not start or not end:
        raise FhirError(400, "required", "$evaluate-measure needs periodStart and periodEnd (dates)")
    try:
        low, high = parse_range(start)[0], parse_range(end)[1] + _TICK
    except DateFormatError as exc:
        raise FhirError(400, "invalid", f"periodStart/periodEnd: {exc}") from None
    if high <= low:
        raise FhirError(400, "invalid", "periodEnd must not be before periodStart")
    report_type = REPORT_TYPES.get(ctx.one("reportType") or "population")
    if report_type is None:
        raise FhirError(400, "not-supported", "reportType must be population (summary) or subject-list: these "
                        "indicators describe a practice, never one client")  # fmt: skip
    subject = _subject(ctx)
    scope = scope_for(ctx.fhir.policy, ctx.fhir.repo.engine, subject)
    window = Window(low, high, ctx.fhir.settings.dropout_days)
    return make_request(ctx.fhir.library, window, (start, end), scope, subject, report_type)


def _subject(ctx: OperationContext) -> str | None:
    subject, practitioner = ctx.one("subject"), ctx.one("practitioner")
    if subject and practitioner:
        raise FhirError(400, "invalid", "Give subject or practitioner, not both")
    value = subject or (practitioner and (practitioner if "/" in practitioner else f"Practitioner/{practitioner}"))
    if not value:
        return None
    kind, _, identity = value.partition("/")
    if kind == "Patient" or kind == "Group":
        raise FhirError(400, "not-supported", "These indicators describe a practice: subject must be an "
                        "Organization, a Practitioner or a PractitionerRole")  # fmt: skip
    if kind not in ("Organization", "Practitioner", "PractitionerRole") or not identity or "/" in identity:
        raise FhirError(400, "invalid", f"subject must be like Organization/123: {value[:100]}")
    return value


OPERATION = standard(
    "evaluate-measure",
    evaluate_measure,
    canonicals={"*": f"{HL7}/Measure-evaluate-measure"},
    resources=["Measure"],
    levels={"type", "instance"},
    documentation="The supervision indicators (indicators/): `periodStart`, `periodEnd` (required), `reportType` "
    "population (default) or subject-list, `subject` (Organization, Practitioner or PractitionerRole) or "
    "`practitioner`, `measure` at type level. Computed in SQL over the reporting index; every group stratified "
    "by program, clinician, month, age band and (results) instrument, each cell with its number of clients and "
    "a 95 % interval (extensions). At type level without `measure`: a collection Bundle of every indicator's "
    "report. A user sees only the organisations they supervise; a system/ client every one.",
    reveals=("MeasureReport",),
)

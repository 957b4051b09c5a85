"""Patient/{id}/$alliance-summary: the client's scored sessions per measure (series, trend, latest items against
the previous session) and active Flags with their follow-up questions, as a Parameters resource."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.operations.base import OperationContext, definition, own, param
from fhir_server.scoring.summary import AllianceSummary, build_summary, to_parameters

MAX_SESSIONS = 1000


def load_summary(fhir: Any, patient_id: str) -> AllianceSummary:
    """$alliance-summary: the patient must exist here (404/410 like a read)."""
    fhir.read("Patient", patient_id)
    return summary_for(fhir, patient_id)


def summary_for(fhir: Any, patient_id: str) -> AllianceSummary:
    """The one query path behind the clinician view, CDS cards and this operation.  The Patient itself may live
    only in the EHR that launched the app: the scores here are filed under its id all the same."""
    subject = f"Patient/{patient_id}"
    observations = fhir.search(
        fhir.parse_query(
            "Observation",
            [
                ("subject", subject),
                ("category", "survey"),
                ("status", "final,amended"),
                ("_sort", "date"),
                ("_count", str(MAX_SESSIONS)),
            ],
        )
    ).outcome.matches
    flags = fhir.search(fhir.parse_query("Flag", [("subject", subject), ("status", "active"), ("_count", "100")]))
    return build_summary(
        subject,
        [fhirjson.loads_stored(s.content or "{}") for s in observations],
        [fhirjson.loads_stored(s.content or "{}") for s in flags.outcome.matches],
    )


def alliance_summary(ctx: OperationContext) -> dict[str, Any]:
    if ctx.resource_type != "Patient" or ctx.resource_id is None:
        raise FhirError(400, "not-supported", "$alliance-summary is defined on Patient instances")
    return to_parameters(load_summary(ctx.fhir, ctx.resource_id))


OPERATION = own(
    definition(
        "alliance-summary",
        title="Alliance and outcome summary",
        description="A client's scored sessions per measure with trend, the latest items against the previous "
        "session, and active Flags with the suggested follow-up question.",
        resources=["Patient"],
        instance=True,
        parameters=[param("return", "out", "Parameters", min_=1)],
    ),
    alliance_summary,
    reveals=("Patient", "Observation", "Flag"),
)

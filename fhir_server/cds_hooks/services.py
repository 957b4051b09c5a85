"""The CDS Hooks services this server offers, as data (CDS Hooks 2.0 §Discovery).  Prefetch templates let an EHR
send everything a card needs with the request; without prefetch the service reads the same queries from the
EHR's FHIR server with the ``fhirAuthorization`` token the EHR grants."""

from __future__ import annotations

from dataclasses import dataclass, field

# Newest first: an EHR answers a prefetch with the first page only, so an oldest-first query would cut the
# newest results of a long history.  ``patient`` (the birth date picks the form for the client's age) and
# ``responses`` (forms with nothing to score leave no Observation) are optional: without them the card asks for
# the adult ORS and counts only scored Observations.
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "observations": (
        "Observation?subject=Patient/{{context.patientId}}&category=survey&status=final,amended&_sort=-date&_count=200"
    ),
    "flags": "Flag?subject=Patient/{{context.patientId}}&status=active&_count=100",
    "responses": "QuestionnaireResponse?subject=Patient/{{context.patientId}}&_sort=-authored&_count=20",
}
REQUIRED = ("observations", "flags")
# the least the service needs to read when prefetch is absent (SMART v1 and v2 spellings)
READ_SCOPES = (
    "patient/Observation.read patient/Flag.read, and for the form by age patient/Patient.read "
    "patient/QuestionnaireResponse.read"
)


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str] = field(default_factory=lambda: dict(PREFETCH))

    def discovery(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": self.prefetch,
            "usageRequirements": f"Without prefetch, fhirAuthorization with {READ_SCOPES} (or v2 .rs).",
        }


SERVICES = {
    s.id: s
    for s in (
        Service(
            "fit-alliance-patient-view",
            "patient-view",
            "Therapeutic alliance and outcome",
            "Cards for the client's latest SRS/ORS/WAI-SR results: alliance concerns with the follow-up question to "
            "ask, declining trends, whether today's ORS is still to be collected, and when the therapist rated the "
            "last two sessions higher than the client did by the site's margin.",
        ),
        Service(
            "fit-alliance-encounter-start",
            "encounter-start",
            "Before the session: alliance and outcome",
            "At the start of a session: collect the ORS, and what the client's last SRS asks you to follow up.",
        ),
    )
}

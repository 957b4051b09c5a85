"""The therapist's rating beside the client's on the clinician view (issue 21): the therapist's total of each session
as a line beside the client's alliance line, and for each session both rated, the two totals and the gap.

Which numbers pair is the library's (the clinician-rated instrument's ``concordance``, ``ScoringPipeline.pairings``):
the line is drawn only beside an alliance line whose instrument has a therapist's counterpart (the SRS, not the
CSRS).  A session's two ratings are the two responses its gap Observation is derived from (scoring/concordance.py),
so they are matched by what the gap names, never by date; the therapist's point is placed at the session's date
(the client's rating's), so the two ends of a gap share one session on the chart even when the therapist rated it
the next day.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from fhir_server import fhirjson
from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.clinician.blind import pairings
from fhir_server.clinician.charts import SessionPair, TherapistLine
from fhir_server.engine.interactions import Interactions
from fhir_server.scoring.concordance import CLINICIAN
from fhir_server.scoring.summary import AllianceSummary

MAX_GAPS = 1000  # as many sessions as the summary reads (operations/alliance_summary.py)


def therapist_line(fhir: Interactions, summary: AllianceSummary, alliance_url: str | None) -> TherapistLine | None:
    """The therapist's line beside the alliance instrument ``alliance_url``; None when it has no therapist's
    counterpart or the therapist never rated a session."""
    pairing = next((p for p in pairings(fhir) if p.spec.client == alliance_url), None)
    if pairing is None:
        return None
    spec = pairing.spec
    theirs = summary.measure(spec.total.rater, CLINICIAN)
    if theirs is None or not theirs.points:
        return None
    clients = summary.measure(spec.total.client)
    client_by_response = {p.response: p for p in (clients.points if clients else []) if p.response}
    therapist_by_response = {p.response: p for p in theirs.points if p.response}
    pairs, dated = [], {}
    for gap in _gaps(fhir, summary.patient, spec.total.code):
        responses = [str(d.get("reference", "")) for d in gap.get("derivedFrom", [])]
        client = next((client_by_response[r] for r in responses if r in client_by_response), None)
        therapist = next((therapist_by_response[r] for r in responses if r in therapist_by_response), None)
        if client is None or therapist is None:  # one of the two is not shown (withheld, or a void rating)
            continue
        value = Decimal(str(gap["valueQuantity"]["value"]))
        pairs.append(SessionPair(client.date, client.value, therapist.value, value))
        dated[therapist.observation] = client.date
    points = [replace(p, date=dated.get(p.observation, p.date)) for p in theirs.points]
    return TherapistLine(sorted(points, key=lambda p: p.date), sorted(pairs, key=lambda p: p.date), "Therapist")


def _gaps(fhir: Interactions, subject: str, code: str) -> list[dict]:
    query = fhir.parse_query(
        "Observation",
        [
            ("subject", subject),
            ("code", f"{MEASURES_CODESYSTEM}|{code}"),
            ("status", "final,amended"),
            ("_count", str(MAX_GAPS)),
        ],
    )
    return [fhirjson.loads_stored(s.content or "{}") for s in fhir.search(query).outcome.matches]

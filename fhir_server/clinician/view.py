"""What the clinician view shows, assembled from the one summary query path (operations/alliance_summary.py):
the trend chart, the latest session's items against the previous one, subscale profiles (the WAI-SR's), the
active Flags with their follow-up questions, every score as a table, and whether each session is in the EHR yet.

Which measure is which comes from the library (clinician/instruments.py), never from codes written here.  The
trend (0-40, by session) has an alliance line and an outcome line: each the client's own series of an instrument
of that domain given at every session (``administered`` start or end) whose total fits the chart's scale —
preferring the form made for the client's age today, then the adult forms, then library order; with no sessions
yet, that first form still names the line and gives the alliance cutoff.  An instrument whose total's Observation
carries labelled component-only subscales (the WAI-SR means) gets a profile chart of them.

Also the acknowledgement of a Flag: the Flag becomes inactive with ``period.end``, the acknowledgement (who, when)
is recorded on the Flag and in a Provenance, and — for a launch from an EHR — the change is queued for
write-back, all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fhir_server import fhirjson
from fhir_server.clinician.blind import Unpaired, Unrated, latest_state, withheld
from fhir_server.clinician.charts import (
    SCALE_MAX,
    TherapistLine,
    TrendLines,
    profile_chart,
    reliable_change,
    total_cutoff,
    trend_chart,
)
from fhir_server.clinician.instruments import InstrumentFacts, instruments
from fhir_server.clinician.requests import RequestsPanel, requests_panel
from fhir_server.clinician.therapist_line import therapist_line
from fhir_server.ehr import outbox
from fhir_server.engine.interactions import Interactions
from fhir_server.ids import new_id
from fhir_server.operations.alliance_summary import summary_for
from fhir_server.scoring.ages import age_band, age_on
from fhir_server.scoring.concordance import CLINICIAN
from fhir_server.scoring.flag_state import period_ended
from fhir_server.scoring.resources import ACKNOWLEDGED, flag_code, series_of
from fhir_server.scoring.summary import ActiveFlag, AllianceSummary, MeasureSeries, latest_flags
from fhir_server.store.repository import WriteSession

ACKNOWLEDGEMENT = ACKNOWLEDGED


class FlagNotOpen(Exception):
    """The Flag is not an active Flag of this patient (acknowledged meanwhile, or another patient's)."""


@dataclass
class ScoreRow:
    date: str
    measure: str
    series: str
    value: Decimal
    interpretation: str
    flagged: bool
    delivery: str | None


@dataclass(frozen=True)
class Profile:
    heading: str  # "WAI-SR: Bond, Goal and Task"
    svg: str


@dataclass
class ClinicianView:
    patient: str
    trend_svg: str
    profiles: list[Profile]
    srs: MeasureSeries | None  # the trend's alliance line (the SRS, the CSRS, or whichever the library's is)
    ors: MeasureSeries | None  # the trend's outcome line (the ORS, the CORS, ...)
    latest_items: list[tuple[str, MeasureSeries]]  # (heading, series) of the trend's two lines
    # Other raters' series (an ORS by a parent), shown apart from the client's own: never on the client's trend.
    # The therapist's own ratings and gaps are not among them: they are the ``therapist`` line and its table.
    others: list[MeasureSeries]
    flags: list[tuple[ActiveFlag, int]]  # the latest Flag of each kind of concern, and how many earlier ones
    rows: list[ScoreRow] = field(default_factory=list)
    cutoffs: TrendLines | None = None
    # The session the therapist is asked to rate (hidden from everything above while ``rating.hidden``), or a
    # recent rating that names no session and so cannot be paired (clinician/blind.py)
    rating: Unrated | Unpaired | None = None
    therapist: TherapistLine | None = None  # the therapist's rating of each session, beside the alliance line
    requests: RequestsPanel | None = None  # "Ask the client to fill in …" and the open requests (requests.py)


def _on_the_trend(instrument: InstrumentFacts, domain: str) -> bool:
    total = instrument.total
    fits_scale = total is not None and total.min >= 0 and total.max <= SCALE_MAX
    return instrument.domain == domain and instrument.per_session and fits_scale


def _trend_line(
    summary: AllianceSummary, known: list[InstrumentFacts], domain: str, years: int | None
) -> tuple[InstrumentFacts | None, MeasureSeries | None]:
    """The instrument and the client's own series one line of the trend shows (see the module's docstring)."""
    candidates = sorted(
        (i for i in known if _on_the_trend(i, domain)),
        key=lambda i: (not (years is not None and i.fits(years)), not i.adult, i.position),
    )
    for instrument in candidates:
        series = summary.measure(instrument.total.code) if instrument.total else None
        if series is not None and series.points:
            return instrument, series
    return (candidates[0] if candidates else None), None


def _profiles(summary: AllianceSummary, known: list[InstrumentFacts]) -> list[Profile]:
    profiles = []
    for instrument in known:
        scores, total = instrument.profile, instrument.total
        series = summary.measure(total.code) if total and scores else None
        if series is None:
            continue
        shown = {
            s.code: series.subscores[s.code] for s in sorted(scores, key=lambda s: s.code) if s.code in series.subscores
        }
        if not shown:
            continue
        labels = {s.code: s.label for s in scores}
        names = [labels[code] for code in shown]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        top = max(s.max for s in scores)
        title = f"{instrument.abbreviation} {listed} means ({min(s.min for s in scores)} to {top}) by administration"
        chart = profile_chart(shown, labels, title, top, key=f"profile-{len(profiles) + 1}")
        profiles.append(Profile(f"{instrument.abbreviation}: {listed}", chart))
    return profiles


def build_view(fhir: Interactions, patient_id: str, birth_date: str | None) -> ClinicianView:
    everything = summary_for(fhir, patient_id)
    rating = latest_state(fhir, everything)
    summary = withheld(everything, rating)  # nothing below sees a session the therapist has yet to rate
    settings = fhir.scoring.settings  # checked at start-up against the rules
    band = age_band(birth_date, None)
    known, years = instruments(fhir.library), age_on(birth_date, None)
    alliance, srs = _trend_line(summary, known, "alliance", years)
    outcome, ors = _trend_line(summary, known, "outcome", years)
    ors_rules = outcome.rules if outcome and ors else None
    lines = TrendLines(
        total_cutoff(alliance.rules if alliance else None, settings, band),
        total_cutoff(ors_rules, settings, band),
        reliable_change(ors_rules, settings, band),
        alliance.abbreviation if alliance else "Alliance",
        outcome.abbreviation if outcome else "Outcome",
    )
    states = _delivery_states(fhir, summary)
    rows = [
        ScoreRow(
            point.date[:10],
            measure.display,
            measure.series,
            point.value,
            "; ".join(t for t in point.interpretation if t),
            point.flagged,
            states.get(point.observation),
        )
        for measure in summary.measures
        for point in measure.points
    ]
    rows.sort(key=lambda r: (r.date, r.measure), reverse=True)
    therapist = therapist_line(fhir, summary, alliance.url if alliance else None)
    return ClinicianView(
        patient=patient_id,
        trend_svg=trend_chart(srs, ors, lines, therapist),
        profiles=_profiles(summary, known),
        srs=srs,
        ors=ors,
        latest_items=[(name, m) for name, m in ((lines.alliance, srs), (lines.outcome, ors)) if m and m.items],
        others=[m for m in summary.measures if m.series not in ("self", CLINICIAN) and m.points],
        flags=latest_flags(summary.flags),
        rows=rows,
        cutoffs=lines,
        rating=rating,
        therapist=therapist,
        requests=requests_panel(fhir, patient_id),
    )


def _delivery_states(fhir: Interactions, summary: AllianceSummary) -> dict[str, str | None]:
    """Observation reference → "in the EHR" / "pending" / "failed" / None (never queued: not from an EHR launch)."""
    response_of = {
        point.observation: (point.response or "").partition("/")[2]
        for measure in summary.measures
        for point in measure.points
    }
    states = outbox.delivery_states(fhir.repo.engine, sorted({r for r in response_of.values() if r}))
    return {observation: states.get(response) for observation, response in response_of.items()}


def acknowledge(
    fhir: Interactions,
    patient_id: str,
    flag_id: str,
    who: str,
    ehr_id: int | None,
    token_ref: str | None,
) -> None:
    """Close an active Flag of this patient as acknowledged by ``who`` (a Practitioner reference), now."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    fhir.repo.write(lambda session: acknowledge_in(fhir, session, patient_id, flag_id, who, now, ehr_id, token_ref))


def acknowledge_in(
    fhir: Interactions,
    session: WriteSession,
    patient_id: str,
    flag_id: str,
    who: str,
    at: str,
    ehr_id: int | None = None,
    token_ref: str | None = None,
) -> None:
    """``acknowledge`` in the caller's transaction, at the instant ``at``: the sandbox's practice history
    acknowledges its concerns between two past sessions, in the transaction that writes them."""
    current = session.current("Flag", flag_id, lock=True)
    flag = fhirjson.loads_stored(current.content or "{}") if current and not current.deleted else None
    subject = f"Patient/{patient_id}"
    if flag is None or flag.get("status") != "active" or flag.get("subject", {}).get("reference") != subject:
        raise FlagNotOpen(flag_id)
    code = flag_code(flag)
    query = fhir.parse_query("Flag", [("subject", subject), ("status", "active"), ("_count", "200")])
    series = series_of(flag)
    same_kind = [  # the same concern by the same rater: another rater's concern is acknowledged on its own
        (stored.id, body)
        for stored in session.search(query).matches
        if stored.id != flag_id
        and flag_code(body := fhirjson.loads_stored(stored.content or "{}")) == code
        and series_of(body) == series
    ]
    responses = set()
    for closing_id, body in [(flag_id, flag), *same_kind]:  # the concern is acknowledged, not one session of it
        _close(fhir, session, closing_id, body, who, at)
        response_id = _response_behind(session, _flag_detail(body))
        if response_id:
            responses.add(response_id)
    if ehr_id is not None:  # the EHR gets the closed Flags with their responses' results
        for response_id in sorted(responses):
            outbox.enqueue(session, ehr_id, f"QuestionnaireResponse/{response_id}", token_ref)


def _close(fhir: Interactions, session: WriteSession, flag_id: str, flag: dict[str, Any], who: str, now: str) -> None:
    flag["status"] = "inactive"
    flag["period"] = period_ended(flag.get("period"), now)  # acknowledged now; never ending before it started
    flag.setdefault("extension", []).append(
        {
            "url": ACKNOWLEDGEMENT,
            "extension": [{"url": "by", "valueReference": {"reference": who}}, {"url": "at", "valueDateTime": now}],
        }
    )
    written = fhir.update(session, "Flag", flag_id, flag, if_match=None)
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Flag/{flag_id}/_history/{written.stored.version_id}"}],
        "recorded": now,
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}],
            "text": "Flag acknowledged in the clinician view",
        },
        "agent": [{"who": {"reference": who}}],
    }
    fhir.create(session, "Provenance", provenance, resource_id=new_id())


def _response_behind(session: WriteSession, observation: str | None) -> str | None:
    kind, _, observation_id = (observation or "").partition("/")
    stored = session.current("Observation", observation_id) if kind == "Observation" and observation_id else None
    if stored is None or stored.deleted:
        return None
    for reference in fhirjson.loads_stored(stored.content or "{}").get("derivedFrom", []):
        kind, _, response_id = str(reference.get("reference", "")).partition("/")
        if kind == "QuestionnaireResponse" and session.current("QuestionnaireResponse", response_id):
            return response_id
    return None


def _flag_detail(flag: dict[str, Any]) -> str | None:
    for extension in flag.get("extension", []):
        if extension.get("url") == "http://hl7.org/fhir/StructureDefinition/flag-detail":
            return extension.get("valueReference", {}).get("reference")
    return None

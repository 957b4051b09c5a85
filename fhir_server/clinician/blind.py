"""Blind by default (issue 21): the client's latest rating of a paired instrument (the SRS) stays out of the
clinician's pages until the therapist has rated that session themselves.

A therapist who has seen the client's score can no longer say independently how they think the session went, and
the gap between the two ratings (scoring/concordance.py) means something only when the therapist rated first.  So
the clinician view and the result page leave out the client's latest rating — its total, its items, its point on
the chart, its row in the table and the Flags it raised — while

- its session is a local ``Encounter`` (without one the two ratings cannot be paired, so nothing is withheld),
- it was authored less than ``WINDOW`` ago (an older session is past the moment of rating), and
- no current (not entered-in-error) therapist's total exists for the same client and Encounter.

In its place the pages offer the therapist's form for that session.  With ``therapist_rating_blind`` off (the
site's setting) nothing is withheld, and the form is still offered.

Which instruments pair, and by which codes, is the library's (``concordance`` in a clinician-rated instrument's
scoring.json, ``ScoringPipeline.pairings``); nothing here names the SRS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server import fhirjson
from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.engine.interactions import Interactions
from fhir_server.scoring.concordance import Pairing
from fhir_server.scoring.summary import AllianceSummary

WINDOW = timedelta(hours=24)
VOID = "entered-in-error"


@dataclass(frozen=True)
class Unrated:
    """The client's latest rating of a paired instrument, less than a day old, whose session has no therapist's
    rating yet: the session the therapist is asked to rate."""

    observation: str  # Observation/<id>: the client's total
    response: str | None  # QuestionnaireResponse/<id> it was scored from
    encounter: str  # the session's local Encounter id
    date: str  # when the client rated it (effectiveDateTime)
    measure: str  # the client's total's display ("SRS total score")
    therapist_form: str  # the url of the therapist's instrument (its Questionnaire)
    hidden: bool  # the pages leave it out (the site's setting); otherwise they only offer the form


@dataclass(frozen=True)
class Unpaired:
    """The client's latest paired rating is recent but names no local Encounter: it cannot be set beside the
    therapist's, so it is shown at once (and the page says why)."""

    date: str
    measure: str


def pairings(fhir: Interactions) -> list[Pairing]:
    """Each clinician-rated instrument's pairing once (the pipeline files it under both Questionnaire urls)."""
    unique = {p.rules.questionnaire: p for p in fhir.scoring.pairings.values()}
    return [unique[url] for url in sorted(unique)]


def therapist_instrument(fhir: Interactions, unrated: Unrated | None = None) -> str | None:
    """The url of the therapist's form to offer: the one paired with ``unrated``, else the library's first."""
    if unrated is not None:
        return unrated.therapist_form
    found = pairings(fhir)
    return found[0].rules.questionnaire if found else None


def latest_state(
    fhir: Interactions, summary: AllianceSummary, now: datetime | None = None
) -> Unrated | Unpaired | None:
    """The session to rate (``Unrated``), a recent rating that cannot be paired (``Unpaired``), or None."""
    now = now or datetime.now(UTC)
    blind = fhir.settings.therapist_rating_blind
    for pairing in pairings(fhir):
        series = summary.measure(pairing.spec.total.client)  # the client's own series only
        latest = series.latest if series else None
        when = _instant(latest.date) if latest else None
        if latest is None or when is None or now - when >= WINDOW:
            continue
        observation = _current(fhir, latest.observation)
        encounter = local_encounter(observation)
        if encounter is None:
            return Unpaired(latest.date, series.display)
        if rated(fhir, summary.patient, encounter, pairing.spec.total.rater):
            continue
        return Unrated(
            latest.observation, latest.response, encounter, latest.date, series.display, pairing.rules.questionnaire,
            blind,
        )  # fmt: skip
    return None


def rated(fhir: Interactions, subject: str, encounter: str, code: str) -> bool:
    """Whether a current (not entered-in-error) therapist's total of ``code`` exists for this client's session."""
    query = fhir.parse_query(
        "Observation",
        [
            ("subject", subject),
            ("encounter", f"Encounter/{encounter}"),
            ("code", f"{MEASURES_CODESYSTEM}|{code}"),
            ("_count", "20"),
        ],
    )
    for stored in fhir.search(query).outcome.matches:
        observation = fhirjson.loads_stored(stored.content or "{}")
        if observation.get("status") != VOID:
            return True
    return False


def withheld(summary: AllianceSummary, unrated: Unrated | Unpaired | None) -> AllianceSummary:
    """The summary without the session to rate, when the site keeps it hidden: its point (and so its row and chart
    point), its items (they are that session's) and the Flags it raised (their texts quote it).  Earlier sessions
    stay as they were."""
    if not isinstance(unrated, Unrated) or not unrated.hidden:
        return summary
    measures = []
    for measure in summary.measures:
        hidden = [p for p in measure.points if p.observation == unrated.observation]
        if hidden:
            day = hidden[0].date
            measure = replace(
                measure,
                points=[p for p in measure.points if p.observation != unrated.observation],
                items=[],
                subscores={c: [(d, v) for d, v in s if d != day] for c, s in measure.subscores.items()},
            )
        measures.append(measure)
    flags = [f for f in summary.flags if f.observation != unrated.observation]
    return AllianceSummary(summary.patient, measures, flags)


def local_encounter(resource: dict[str, Any] | None) -> str | None:
    """The id of the local ``Encounter/<id>`` a rating names; None for none or an absolute URL (as the pairing
    reads it: scoring/concordance.py)."""
    reference = ((resource or {}).get("encounter") or {}).get("reference", "")
    kind, _, identity = str(reference).partition("/")
    return identity if kind == "Encounter" and identity and "/" not in identity else None


def _current(fhir: Interactions, reference: str) -> dict[str, Any] | None:
    kind, _, identity = reference.partition("/")
    stored = fhir.repo.read(kind, identity) if kind and identity else None
    return fhirjson.loads_stored(stored.content or "{}") if stored is not None and not stored.deleted else None


def _instant(value: str) -> datetime | None:
    """A FHIR dateTime as an aware instant; a date alone is its day's start in UTC; a year or month alone (too
    coarse to tell whether it is a day old) is None, and such a rating is not withheld."""
    if len(value) < 10:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

"""Cards from a client's alliance summary (the same summary the clinician view and $alliance-summary use).

One card per kind of active concern (its latest Flag, with how many earlier sessions raised it), carrying its
follow-up question, and an information card when today's start-of-session measure (the ORS, or the form for the
client's age) has not been collected.  Card uuids are derived from what they are about, so feedback on a card
can be matched to it and the same concern shown twice keeps its identity.

On patient-view, a card when the client's last two therapist-client gaps (the two newest gap Observations, not
entered in error: scoring/concordance.py) are both at or over the site's margin on the total: two sessions in a
row the therapist rated higher than the client did, worded as something to be curious about, not a verdict.  The
cards are for the clinician (CDS Hooks is clinician-facing); the gaps are the clinician's (labelled clinician-only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from fhir_server.canonical import BASE, MEASURES_CODESYSTEM
from fhir_server.cds_hooks.measures import StartMeasure
from fhir_server.scoring.summary import ActiveFlag, AllianceSummary, MeasureSeries, latest_flags

OVERRIDE_SYSTEM = f"{BASE}/CodeSystem/fit-cds-override"
OVERRIDE_REASONS = [
    {"system": OVERRIDE_SYSTEM, "code": "already-discussed", "display": "Already discussed with the client"},
    {"system": OVERRIDE_SYSTEM, "code": "not-today", "display": "Not the focus of today's session"},
    {"system": OVERRIDE_SYSTEM, "code": "clinical-judgement", "display": "Clinical judgement"},
]
_CARD_NAMESPACE = uuid.UUID("6f1c7d3e-2b8a-4c55-9a57-1d6f0e9b7a10")
_WARNING_PRIORITIES = {"PH", "PM"}  # flag-priority: high and medium concerns are warnings


def card_id(service: str, patient: str, about: str) -> str:
    return str(uuid.uuid5(_CARD_NAMESPACE, f"{service}|{patient}|{about}"))


def build_cards(
    summary: AllianceSummary,
    *,
    service: str,
    hook: str,
    today: date,
    app_url: str,
    source_url: str,
    still_to_rate: StartMeasure | None = None,
    alliance_flags: frozenset[str] = frozenset(),
    observations: Sequence[dict[str, Any]] = (),
    gap_margins: Mapping[str, Decimal] | None = None,
) -> list[dict[str, Any]]:
    """``still_to_rate``: the start-of-session measure for the client's age, when none was rated today;
    ``alliance_flags``: the Flag codes whose card summary names the lowest-rated item; ``observations``: the
    client's scored Observations, and ``gap_margins`` each gap code's margin on the total (cds_hooks/measures.py),
    for the card on the last two gaps."""
    cards = [
        _flag_card(summary, flag, earlier, service, app_url, source_url, flag.code in alliance_flags)
        for flag, earlier in latest_flags(summary.flags)
    ]
    if hook == "patient-view":
        for code, margin in sorted((gap_margins or {}).items()):
            card = _gaps_card(summary.patient, observations, code, margin, service, app_url, source_url)
            if card is not None:
                cards.append(card)
    if hook in ("patient-view", "encounter-start") and still_to_rate is not None:
        cards.append(
            _card(
                card_id(service, summary.patient, f"start-measure-today|{today.isoformat()}"),
                f"{still_to_rate.abbreviation} not yet collected today",
                f"Ask the client to complete the {still_to_rate.title} at the start of the session, before you talk "
                "about the week, so today's score reflects how they arrived.",
                "info",
                app_url,
                source_url,
                {"view": "form", "measure": still_to_rate.id},
            )
        )
    return cards


def _flag_card(
    summary: AllianceSummary,
    flag: ActiveFlag,
    earlier: int,
    service: str,
    app_url: str,
    source_url: str,
    about_alliance: bool,
) -> dict:
    measure = _measure_of(summary, flag)
    headline = flag.message.split(". ")[0].replace(" today", " last session") if flag.message else flag.display
    lowest = measure.lowest_item if measure and about_alliance else None
    summary_text = f"{headline}; {lowest.display} lowest" if lowest else headline
    detail = [flag.message or flag.display]
    if earlier:
        detail.append(f"\nAlso raised in {earlier} earlier session{'s' if earlier > 1 else ''}.")
    if measure and measure.items:
        detail += ["", "| Item | Last session | Before |", "|---|---|---|"]
        detail += [f"| {i.display} | {i.latest} | {'' if i.previous is None else i.previous} |" for i in measure.items]
    indicator = "warning" if flag.priority in _WARNING_PRIORITIES else "info"
    return _card(
        card_id(service, summary.patient, f"flag|{flag.id}"),
        summary_text,
        "\n".join(detail),
        indicator,
        app_url,
        source_url,
        {"view": "clinician", "flag": f"Flag/{flag.id}"},
    )


def last_gaps(observations: Sequence[dict[str, Any]], code: str, count: int = 2) -> list[tuple[str, Decimal, str]]:
    """(date, gap, Observation id) of the ``count`` newest current gaps of ``code``, newest first."""
    found = []
    for observation in observations:
        codings = (observation.get("code") or {}).get("coding") or []
        if not any(c.get("system") == MEASURES_CODESYSTEM and c.get("code") == code for c in codings):
            continue
        value = (observation.get("valueQuantity") or {}).get("value")
        if (
            observation.get("status") == "entered-in-error"
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            continue
        found.append((str(observation.get("effectiveDateTime", "")), Decimal(str(value)), str(observation.get("id"))))
    return sorted(found, key=lambda g: g[0], reverse=True)[:count]


def _gaps_card(
    patient: str,
    observations: Sequence[dict[str, Any]],
    code: str,
    margin: Decimal,
    service: str,
    app_url: str,
    source_url: str,
) -> dict[str, Any] | None:
    gaps = last_gaps(observations, code)
    if len(gaps) < 2 or any(gap < margin for _, gap, _ in gaps):
        return None
    (newer_date, newer, newer_id), (older_date, older, older_id) = gaps
    detail = (
        f"In the last two sessions that both rated, the therapist's rating of the session was above the client's "
        f"own: by {newer} points on {newer_date[:10]} and by {older} points on {older_date[:10]}, each at or over "
        f"this site's margin of {margin} points on the total.\n\n"
        "Two sessions in a row are something to be curious about, not a verdict: both ratings are single marks, "
        "and the client may be experiencing something the sessions have not shown yet. What might that be? An open "
        "question next time, such as how the work together is going for them, may tell more than the numbers."
    )
    return _card(
        card_id(service, patient, f"gaps|{code}|{newer_id}|{older_id}"),
        f"Last two sessions: the therapist rated them higher than the client did (by {newer} and {older})",
        detail,
        "info",
        app_url,
        source_url,
        {"view": "clinician"},
    )


def _card(
    card: str, summary: str, detail: str, indicator: str, app_url: str, source_url: str, context: dict[str, str]
) -> dict[str, Any]:
    return {
        "uuid": card,
        "summary": summary if len(summary) < 140 else summary[:136] + "...",
        "detail": detail,
        "indicator": indicator,
        "source": {"label": "Feedback-informed treatment (FIT) alliance service", "url": source_url},
        "overrideReasons": OVERRIDE_REASONS,
        "links": [
            {"label": "Open the alliance view", "url": app_url, "type": "smart", "appContext": json.dumps(context)}
        ],
    }


def _measure_of(summary: AllianceSummary, flag: ActiveFlag) -> MeasureSeries | None:
    if flag.observation:
        for measure in summary.measures:
            if any(p.observation == flag.observation for p in measure.points):
                return measure
    prefix = flag.code.split("-")[0]
    return next(
        (
            m
            for m in summary.measures
            if m.code.startswith(prefix) and m.code.endswith("-total") and m.series == flag.series
        ),
        None,
    )

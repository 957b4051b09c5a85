"""On patient-view: a card when the client has no outcome measure (the ORS, or the form for the client's age) in the
last ``FHIR_SERVER_TASK_CARD_DAYS`` days and no open request for it (an SDC Task on this server, measure_tasks/).

The card links to the app's clinician view, where "Ask the client to fill in a measure" makes the request: a SMART
app link, not a suggestion.  That is what a certified Epic CDS service can offer on patient-view: Epic renders
cards' SMART links (appContext passed through the launch) but acts on suggestions only for orders on order-select /
order-sign, and a suggestion's create would make the Task in the EHR rather than here, without the channel and
address the clinician chooses.  Nothing is asked of the client until the clinician says so in the form.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.cds_hooks.cards import _card, card_id
from fhir_server.cds_hooks.measures import StartMeasure
from fhir_server.engine.interactions import Interactions
from fhir_server.measure_tasks.tasks import MeasureTasks


def last_rated(observations: Sequence[dict[str, Any]], measure: StartMeasure) -> date | None:
    """The date of the client's newest scored Observation of ``measure`` (not entered in error)."""
    dates = [
        str(o.get("effectiveDateTime", ""))[:10]
        for o in observations
        if o.get("status") != "entered-in-error"
        and any(
            c.get("system") == MEASURES_CODESYSTEM and c.get("code") in measure.score_codes
            for c in (o.get("code") or {}).get("coding") or []
        )
    ]
    valid = []
    for text in dates:
        try:
            valid.append(date.fromisoformat(text))
        except ValueError:
            continue
    return max(valid, default=None)


def request_card(
    patient: str,
    observations: Sequence[dict[str, Any]],
    measure: StartMeasure | None,
    open_requests: int,
    *,
    today: date,
    days: int,
    service: str,
    app_url: str,
    source_url: str,
) -> dict[str, Any] | None:
    """The card, or None when the measure was rated within ``days`` or a request for it is still open."""
    if measure is None or open_requests:
        return None
    last = last_rated(observations, measure)
    if last is not None and last >= today - timedelta(days=days):
        return None
    since = f"since {last.isoformat()}" if last else "yet"
    detail = (
        f"The client has not completed the {measure.title} {since}, and no request for it is open. Ask them to fill "
        f'it in before the next session: open the alliance view and use "Ask the client to fill in a measure" '
        f"(a link by email or text message, expiring after a few days)."
    )
    return _card(
        card_id(service, patient, f"request|{measure.id}|{last.isoformat() if last else 'never'}"),
        f"No {measure.abbreviation} in the last {days} days: ask the client to fill it in",
        detail,
        "info",
        app_url,
        source_url,
        {"view": "clinician"},
    )


def request_cards(
    fhir: Interactions,
    patient: str,
    observations: Sequence[dict[str, Any]],
    measure: StartMeasure | None,
    *,
    today: date,
    service: str,
    app_url: str,
    source_url: str,
) -> list[dict[str, Any]]:
    """The card for this client, its open requests read from this server's Tasks (blocking: call off the loop)."""
    waiting = MeasureTasks(fhir).open_for(patient, measure.url) if measure is not None else []
    days = fhir.settings.task_card_days
    card = request_card(
        patient,
        observations,
        measure,
        len(waiting),
        today=today,
        days=days,
        service=service,
        app_url=app_url,
        source_url=source_url,
    )
    return [card] if card is not None else []

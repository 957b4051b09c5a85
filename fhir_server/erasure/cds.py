"""The CDS Hooks feedback an erased patient leaves: a clinician's accept or override (and comment) of a card shown
for the patient.  Feedback rows name only the card, whose uuid is derived from the service, the patient and what
the card was about (cds_hooks/cards.py, ``card_id``): the cards the patient could have been shown are computed from
the erased record (their Flags, the days since their first record for the start-of-session card, the pairs of their
gap Observations) and matched against the cards any feedback names.  Cards built from an EHR's prefetch of a
patient this server never held cannot be told apart and stay."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.cds_hooks.cards import card_id
from fhir_server.cds_hooks.measures import gap_margins
from fhir_server.cds_hooks.services import SERVICES
from fhir_server.erasure.plan import Plan
from fhir_server.library import Library
from fhir_server.scoring.settings import ScoringSettings
from fhir_server.store import expunge as store
from fhir_server.store import expunge_rows as rows
from fhir_server.store.session import WriteSession

MAX_DAYS = 20 * 366  # the start-of-session card was shown on one of the days since the patient's first record


def remove_feedback(session: WriteSession, plan: Plan, library: Library, settings: ScoringSettings, today: date) -> int:
    """Before the record is removed (its index rows say which Observations are gaps)."""
    given = rows.feedback_cards(session)
    if not given or plan.patient is None:
        return 0
    first = store.earliest_write(session, plan.erase)
    about = [f"flag|{flag_id}" for flag_id in plan.ids("Flag")]
    about += [f"start-measure-today|{day.isoformat()}" for day in _days(first, today)]
    about += _gap_pairs(session, plan, set(gap_margins(library, settings)))
    patient = f"Patient/{plan.patient}"
    cards = {card_id(service, patient, what) for service in SERVICES for what in about}
    return rows.remove_feedback(session, cards & given)


def _days(first: datetime | None, today: date) -> Iterable[date]:
    """Every day from the first record to tomorrow (a card's day is the EHR's, which may be ahead of UTC)."""
    if first is None:
        return []
    start = max(first.date(), today - timedelta(days=MAX_DAYS))
    return (start + timedelta(days=n) for n in range((today - start).days + 2))


def _gap_pairs(session: WriteSession, plan: Plan, gap_codes: set[str]) -> list[str]:
    """``gaps|code|newer|older`` for every ordered pair of the patient's gap Observations of one code (the card
    names the two newest when it was shown)."""
    by_code: dict[str, list[str]] = {}
    for observation_id, code in store.measure_codes(session, plan.ids("Observation"), MEASURES_CODESYSTEM):
        if code in gap_codes:
            by_code.setdefault(code, []).append(observation_id)
    return [
        f"gaps|{code}|{newer}|{older}"
        for code, ids in by_code.items()
        for newer in ids
        for older in ids
        if newer != older
    ]

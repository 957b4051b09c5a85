"""What the cards need to know of the instrument library — never instrument codes written here: which outcome
measure a client rates at the start of a session and whether they have rated one today, which Flags are
about the alliance (their card names the lowest-rated item), and the therapist-client gaps with this site's margin
on their total (the card on the last two gaps).

The library's ``outcome`` instruments (ORS, CORS, YCORS and whatever a content pack adds) each declare the ages
they are made for.  The card asks for the one that fits the client's age on the day; with no birth date, the
one with no upper age (the adult form).  "Collected today" counts a response to any outcome instrument authored
today — an instrument with nothing to score (YCORS) leaves no Observation, so responses are read first — or an
Observation of any of their scores dated today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.library.discover import Library
from fhir_server.scoring.ages import age_on
from fhir_server.scoring.concordance import margins
from fhir_server.scoring.rules import AgeRange
from fhir_server.scoring.settings import ScoringSettings


@dataclass(frozen=True)
class StartMeasure:
    id: str  # the app's name for it (the library folder): the card's appContext measure
    title: str  # "Young Child Outcome Rating Scale (YCORS)"
    abbreviation: str  # "YCORS"
    url: str
    score_codes: frozenset[str]  # fit-measures codes of its Observations
    ages: AgeRange | None

    def fits(self, years: int) -> bool:
        low = self.ages.min if self.ages and self.ages.min is not None else 0
        high = self.ages.max if self.ages and self.ages.max is not None else 200
        return low <= years <= high


def start_measures(library: Library) -> list[StartMeasure]:
    found = []
    for instrument in library.instruments:
        rules = instrument.rules
        if rules is None or rules.domain != "outcome":
            continue
        title = str(instrument.questionnaire.get("title") or instrument.id)
        short = re.search(r"\(([^)]+)\)\s*$", title)
        found.append(
            StartMeasure(
                id=instrument.id,
                title=title,
                abbreviation=short.group(1) if short else instrument.id.upper(),
                url=instrument.url,
                score_codes=frozenset(score.code for score in rules.scores),
                ages=rules.ages,
            )
        )
    return found


def for_client(measures: list[StartMeasure], birth_date: str | None, today: date) -> StartMeasure | None:
    """The measure made for the client's age today; the adult form when the age is unknown or none fits."""
    years = age_on(birth_date, today.isoformat())
    fitting = [m for m in measures if years is not None and m.fits(years)]
    adult = [m for m in measures if m.ages is None or m.ages.max is None]
    return next(iter(fitting or adult or measures), None)


def collected_today(
    measures: list[StartMeasure], responses: list[dict[str, Any]], observations: list[dict[str, Any]], today: date
) -> bool:
    day = today.isoformat()
    urls = {m.url for m in measures}
    for response in responses:
        canonical = str(response.get("questionnaire", "")).partition("|")[0]
        rated = canonical in urls and response.get("status") in ("completed", "amended")
        if rated and str(response.get("authored", ""))[:10] == day:
            return True
    codes = set().union(*(m.score_codes for m in measures)) if measures else set()
    for observation in observations:
        if str(observation.get("effectiveDateTime", ""))[:10] != day:
            continue
        codings = (observation.get("code") or {}).get("coding") or []
        if any(c.get("system") == MEASURES_CODESYSTEM and c.get("code") in codes for c in codings):
            return True
    return False


def alliance_flag_codes(library: Library) -> frozenset[str]:
    """The Flag codes of the library's alliance instruments (SRS, CSRS, WAI-SR and any a content pack adds)."""
    return frozenset(
        rule.code
        for instrument in library.instruments
        if instrument.rules is not None and instrument.rules.domain == "alliance"
        for rule in instrument.rules.flags
    )


def gap_margins(library: Library, settings: ScoringSettings) -> dict[str, Decimal]:
    """The code of each therapist-client gap total (``srs-gap-total``) → the margin on the total at which the gap
    raises its Flag, as this site runs it (the setting, or the site's override: scoring/concordance.py)."""
    return {
        instrument.rules.concordance.total.code: margins(instrument.rules, settings)[0]
        for instrument in library.instruments
        if instrument.rules is not None and instrument.rules.concordance is not None
    }

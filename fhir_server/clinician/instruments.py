"""What the app's pages know of the instrument library, read from its data — never instrument codes written here:
each instrument's name and abbreviation (its Questionnaire's title, "Outcome Rating Scale (ORS)"), its domain, the
ages it is made for (scoring.json ``ages``, else the Questionnaire's age ``useContext``), when a clinician hands it
out (scoring.json ``administered``), its total and the subscale scores a profile shows, with their labels.

**The chooser** ("Choose the measure") lists the instruments that declare ``administered`` and are made for the
client's age today; when the age is unknown (or no such form fits it), the adult forms (no upper age).  Order: when
they are given (start, end, every few sessions), then library order.  Any instrument that declares
``administered`` may be chosen, whatever the age: the list is a suggestion, not a gate (a launch's ``measure=``
opens any form too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_server.library.discover import Instrument, Library
from fhir_server.scoring.rules import Administered, Score, ScoringRules

WHEN = {
    "start": "at the start of the session",
    "end": "at the end of the session",
    "every-few-sessions": "every few sessions",
}
PER_SESSION = ("start", "end")  # given at every session: the clinician view's by-session trend
AGE_CONTEXT = "http://terminology.hl7.org/CodeSystem/usage-context-type"


@dataclass(frozen=True)
class InstrumentFacts:
    id: str  # the library folder: the app's name for it (launch ``measure=``, the chooser's value)
    url: str
    title: str  # "Outcome Rating Scale (ORS)"
    abbreviation: str  # "ORS"
    domain: str  # alliance, outcome or engagement (scoring.json; "outcome" without scoring rules)
    min_age: int | None
    max_age: int | None
    administered: Administered | None
    rules: ScoringRules | None
    position: int  # library order, for stable listings

    @property
    def chooser_title(self) -> str:
        return (self.administered.title if self.administered else "") or self.title

    @property
    def when(self) -> str:
        """How the chooser says when it is given ("at the start of the session")."""
        return WHEN[self.administered.when] if self.administered else ""

    @property
    def per_session(self) -> bool:
        return self.administered is not None and self.administered.when in PER_SESSION

    @property
    def total(self) -> Score | None:
        """The score series are read by (the first score with an Observation of its own)."""
        return self.rules.primary if self.rules else None

    @property
    def profile(self) -> list[Score]:
        """Subscale scores that live only as components of the total's Observation (the WAI-SR Bond, Goal and
        Task means), each with the label a clinician reads."""
        total = self.total
        if self.rules is None or total is None:
            return []
        return [s for s in self.rules.scores if s.observation == "component" and s.id in total.components and s.label]

    @property
    def adult(self) -> bool:
        return self.max_age is None

    def fits(self, years: int) -> bool:
        return (self.min_age is None or years >= self.min_age) and (self.max_age is None or years <= self.max_age)


def instruments(library: Library) -> list[InstrumentFacts]:
    return [_facts(instrument, n) for n, instrument in enumerate(library.instruments)]


def _facts(instrument: Instrument, position: int) -> InstrumentFacts:
    rules = instrument.rules
    title = str(instrument.questionnaire.get("title") or instrument.id)
    short = re.search(r"\(([^)]+)\)\s*$", title)
    if rules is not None and rules.ages is not None:
        low, high = rules.ages.min, rules.ages.max
    else:
        low, high = _age_context(instrument.questionnaire)
    return InstrumentFacts(
        id=instrument.id,
        url=instrument.url,
        title=title,
        abbreviation=short.group(1) if short else instrument.id.upper(),
        domain=rules.domain if rules else "outcome",
        min_age=low,
        max_age=high,
        administered=rules.administered if rules else None,
        rules=rules,
        position=position,
    )


def _age_context(questionnaire: dict[str, Any]) -> tuple[int | None, int | None]:
    """The Questionnaire's ``useContext`` age range (years), for an instrument whose scoring declares no ages."""
    for context in questionnaire.get("useContext") or []:
        code = context.get("code") or {}
        if code.get("system") == AGE_CONTEXT and code.get("code") == "age" and "valueRange" in context:
            value = context["valueRange"]
            low, high = (value.get(end, {}).get("value") for end in ("low", "high"))
            return (int(low) if low is not None else None, int(high) if high is not None else None)
    return None, None


def chooser(library: Library, years: int | None) -> list[InstrumentFacts]:
    """What "Choose the measure" lists for a client of ``years`` (None: unknown)."""
    offered = [i for i in instruments(library) if i.administered is not None]
    fitting = [i for i in offered if years is not None and i.fits(years)]
    listed = fitting or [i for i in offered if i.adult]
    order = list(WHEN)
    return sorted(listed, key=lambda i: (order.index(i.administered.when) if i.administered else 0, i.position))


def choosable(library: Library) -> set[str]:
    """The measures the chooser accepts: every instrument that says when it is given."""
    return {i.id for i in instruments(library) if i.administered is not None}

"""A client's age when rated: the age band that picks age-banded cutoffs, and the notes scoring adds when the
form does not fit the client's age or no birth date says which cutoff applies."""

from __future__ import annotations

from datetime import date

from fhir_server.scoring import texts
from fhir_server.scoring.flags import cutoff_of
from fhir_server.scoring.rules import ScoringRules
from fhir_server.scoring.settings import ScoringSettings


def age_on(birth_date: str | None, authored: str | None) -> int | None:
    """Whole years on the day the response was authored (today when it carries no date); None when unknown."""
    if not birth_date or len(birth_date) < 4:
        return None
    try:
        born = date(
            int(birth_date[:4]),
            int(birth_date[5:7]) if len(birth_date) >= 7 else 1,
            int(birth_date[8:10]) if len(birth_date) >= 10 else 1,
        )
        on = date.fromisoformat(authored[:10]) if authored and len(authored) >= 10 else date.today()
    except ValueError:
        return None
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_band(birth_date: str | None, authored: str | None) -> str:
    """child (under 13), adolescent (13-17) or adult; adult when the age is unknown."""
    years = age_on(birth_date, authored)
    if years is None:
        return "adult"
    return "child" if years < 13 else "adolescent" if years < 18 else "adult"


def age_notes(
    rules: ScoringRules, settings: ScoringSettings, birth_date: str | None, authored: str | None
) -> list[str]:
    """What a clinician must know about how age shaped this score: a form given outside its ages, or age-banded
    cutoffs applied without a birth date (the adult cutoff, said with its number)."""
    banded = settings.uses_age_bands(rules)
    years = age_on(birth_date, authored)
    band = age_band(birth_date, authored)
    cutoff = _cutoff_sentence(rules, settings, band) if banded else ""
    name = rules.instrument.upper()
    if years is None:
        return [texts.no_birth_date_note(name, cutoff)] if banded else []
    ages = rules.ages
    if ages is None or ((ages.min is None or years >= ages.min) and (ages.max is None or years <= ages.max)):
        return []
    return [texts.age_note(name, years, texts.ages_text(ages.min, ages.max), ages.instead, cutoff)]


def _cutoff_sentence(rules: ScoringRules, settings: ScoringSettings, band: str) -> str:
    primary = rules.primary
    found = cutoff_of(rules, primary.id, band, settings) if primary else None
    if found is None:
        return ""
    return f"Scored against the {band} cutoff ({texts.plain(found[1])})."

"""Every sentence scoring writes for a clinician or a client, in one place, built from the rule, its setting as
this site runs it, the rater and the instrument's own labels.  A clinician reads these aloud in the minute
before the client leaves: each says what the rule tested, with the numbers it tested against."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.scoring.rules import Comparator

_MET = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}
# The statement that holds when the comparison does not: the complement, so a cutoff and its opposite rule can
# never both hold (or both fail) for one value.
_UNMET = {"<": "at or above", "<=": "above", ">": "at or below", ">=": "below"}


def plain(value: Decimal) -> str:
    """25 rather than 25.0 or 2.5E+1; 35.9 as 35.9."""
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


def condition(comparator: Comparator, threshold: Decimal, *, unmet: bool = False) -> str:
    """'below 25', 'at or above 25' …: the comparison a rule made (or its complement), said in words."""
    return f"{(_UNMET if unmet else _MET)[comparator]} {plain(threshold)}"


def cutoff_interpretation(comparator: Comparator, threshold: Decimal, met: bool) -> str:
    """'Below the cutoff (25)' when the cutoff's comparison holds, 'At or above the cutoff (25)' when not."""
    words = (_MET if met else _UNMET)[comparator]
    return f"{words[0].upper()}{words[1:]} the cutoff ({plain(threshold)})"


def reference_range(domain: str, comparator: Comparator, threshold: Decimal) -> str:
    """Observation.referenceRange.text: where scores sit outside what the cutoff flags.  Outcome measures have a
    clinical range; alliance measures have a cutoff for a conversation, not a clinical range."""
    outside = condition(comparator, threshold, unmet=True)
    outside = outside[0].upper() + outside[1:]
    if domain == "alliance":
        return f"{outside}: no alliance conversation prompted by the cutoff"
    return f"{outside}: outside the clinical range"


def rater(series: str) -> str:
    """Who rated, as a clinician says it: '' for the client's own rating."""
    if not series.startswith("other"):
        return ""
    relation = series.partition(":")[2].strip()
    return relation or "another person"


def by_rater(series: str, message: str) -> str:
    """A Flag's text, opening with who rated when it was not the client."""
    who = rater(series)
    return message if not who else f"Rated by {who}, not the client: {message}"


def rated_apart(therapist: Decimal, client: Decimal) -> str:
    """The opening of a concordance Flag: both totals, as each of them rated today's session."""
    return f"You rated today's session {plain(therapist)}, your client {plain(client)}."


def joined(parts: list[str], last: str = "and") -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} {last} {parts[-1]}"


def trail(values: list[Decimal]) -> str:
    """Oldest to newest: '38.5 → 37 → 35.9'."""
    return " → ".join(plain(v) for v in values)


def change_from_intake(change: Decimal) -> str:
    if change > 0:
        return f"Reliable improvement since intake (+{plain(change)})"
    return f"Reliable deterioration since intake ({plain(change)})"


CLINICALLY_SIGNIFICANT = "Clinically significant change"


def age_note(instrument: str, age: int, ages_text: str, instead: str, cutoff: str) -> str:
    note = f"The client was {age} when rated; the {instrument} is for ages {ages_text}"
    note += f" ({instead})." if instead else "."
    return f"{note} {cutoff}" if cutoff else note


def no_birth_date_note(instrument: str, cutoff: str) -> str:
    return f"No birth date on record: the {instrument} was scored as an adult's. {cutoff}".strip()


def ages_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"{low} and over" if low is not None else f"under {high + 1}" if high is not None else "all ages"

"""Every sentence scoring writes for a clinician or a client, in one place, built from the rule, its setting as
this site runs it, the rater and the instrument's own labels.  A clinician reads these aloud in the minute
before the client leaves: each says what the rule tested, with the numbers it tested against."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fhir_server.scoring.rules import Comparator, ScoringRules

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


# --- The clinician view in French and Spanish ------------------------------------------------------------------
# Stored Flags keep English (Flag.code.text is what every EHR reads); the view shows them in the clinician's
# language by reading the stored text back against the rule's English message, whose placeholders it fills, and
# filling the instrument's translated message (questionnaires/<id>/texts.json) with the same values translated.
# A text that does not read back (a message changed since the Flag was raised) is shown in English, never guessed.

_PHRASES: dict[str, dict[str, str]] = {
    "fr": {
        "below": "sous {n}",
        "at or below": "à {n} ou moins",
        "above": "au-dessus de {n}",
        "at or above": "à {n} ou plus",
        "and": "et",
        "or": "ou",
        "rated by": "Évalué par {who}, et non par le client\u00a0: ",
        "another person": "une autre personne",
        "rated apart": "Vous avez évalué la séance d'aujourd'hui à {therapist}, votre client à {client}.",
        "today's session": "la séance d'aujourd'hui",
    },
    "es": {
        "below": "por debajo de {n}",
        "at or below": "{n} o menos",
        "above": "por encima de {n}",
        "at or above": "{n} o más",
        "and": "y",
        "or": "o",
        "rated by": "Valorado por {who}, no por el cliente: ",
        "another person": "otra persona",
        "rated apart": "Usted valoró la sesión de hoy con {therapist}; su cliente, con {client}.",
        "today's session": "la sesión de hoy",
    },
}
TRANSLATED = tuple(_PHRASES)  # the languages this module can say a Flag in, besides English
_RATED_BY = re.compile(r"Rated by (?P<who>.+?), not the client: (?P<rest>.*)", re.DOTALL)
_RATED_APART = re.compile(
    r"You rated today's session (?P<therapist>\S+), your client (?P<client>\S+)\. (?P<rest>.*)", re.DOTALL
)
_CONDITION = re.compile(r"(?P<words>at or below|at or above|below|above) (?P<n>\S+)")
_NUMBER = re.compile(r"(?<![\w.])(\d+)\.(\d+)(?![\w.])")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_NUMERIC_FIELDS = frozenset({"value", "previous", "change", "intake", "sessions"})
_LISTS = frozenset({"items", "ask", "falls", "domains", "trail"})


def placeholders(message: str) -> set[str]:
    return set(_PLACEHOLDER.findall(message))


def translate_flag(
    rules: ScoringRules, catalogue: Mapping[str, Any], code: str, english: str, language: str | None
) -> str:
    """A stored Flag's English text (``Flag.code.text``) in ``language`` (fr, es, fr-CA…), or the English when the
    language, the rule or the text is not known.  ``catalogue`` is the instrument's texts.json (lang → texts)."""
    primary = (language or "en").split("-")[0].lower()
    texts, phrases = catalogue.get(language or "") or catalogue.get(primary), _PHRASES.get(primary)
    if not texts or not phrases:
        return english
    prefix, rest = "", english
    if rated := _RATED_BY.fullmatch(rest):
        who = rated["who"]
        prefix, rest = (
            phrases["rated by"].format(who=phrases["another person"] if who == "another person" else who),
            rated["rest"],
        )
    swaps = _swaps(rules, texts)
    if rules.concordance is not None and rules.concordance.flag.code == code:
        apart = _RATED_APART.fullmatch(rest)
        if apart is None:
            return english
        numbers = {k: _decimal_comma(apart[k]) for k in ("therapist", "client")}
        prefix, rest = f"{prefix}{phrases['rated apart'].format(**numbers)} ", apart["rest"]
        template, translated = rules.concordance.flag.message, (texts.get("concordance") or {}).get("flag")
    else:
        rule = next((r for r in rules.flags if r.code == code), None)
        template = rule.message if rule else ""
        translated = (texts.get("flags") or {}).get(rule.id) if rule else None
    values = _read_back(template, rest) if translated else None
    if values is None:
        return english
    said = {name: _say(name, value, swaps, phrases) for name, value in values.items()}
    return prefix + _PLACEHOLDER.sub(lambda m: said.get(m[1], m[0]), translated)


def _read_back(template: str, text: str) -> dict[str, str] | None:
    """The values that filled ``template``'s placeholders to give ``text``; None when it was not this template."""
    pattern, seen, last = "", set(), 0
    for found in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[last : found.start()])
        name = found[1]
        pattern += f"(?P={name})" if name in seen else f"(?P<{name}>.+?)"
        seen.add(name)
        last = found.end()
    matched = re.fullmatch(pattern + re.escape(template[last:]), text, re.DOTALL)
    return matched.groupdict() if matched else None


def _say(name: str, value: str, swaps: dict[str, str], phrases: dict[str, str]) -> str:
    if name == "condition" and (condition := _CONDITION.fullmatch(value)):
        return phrases[condition["words"]].format(n=_decimal_comma(condition["n"]))
    if name in _NUMERIC_FIELDS:
        return _decimal_comma(value)
    if name in _LISTS:  # labels and askAbout phrases joined with "and" / "or", and numbers
        marked, said = value, []
        for english in sorted(swaps, key=len, reverse=True):
            if english and english in marked:
                marked = marked.replace(english, f"\x00{len(said)}\x00")
                said.append(swaps[english])
        marked = marked.replace(" and ", f" {phrases['and']} ").replace(" or ", f" {phrases['or']} ")
        marked = marked.replace("today's session", phrases["today's session"])
        marked = _decimal_comma(marked)
        for index, words in enumerate(said):
            marked = marked.replace(f"\x00{index}\x00", words)
        return marked
    return value


def _swaps(rules: ScoringRules, texts: Mapping[str, Any]) -> dict[str, str]:
    """English label or askAbout phrase → its translation, from the rules and the instrument's texts."""
    swaps: dict[str, str] = {}
    items = texts.get("items") or {}
    for item in rules.itemScores:
        given = items.get(item.linkId) or {}
        for key in ("label", "askAbout"):
            if getattr(item, key) and given.get(key):
                swaps[getattr(item, key)] = given[key]
    for score in rules.scores:
        label = (texts.get("scores") or {}).get(score.id)
        if score.label and label:
            swaps[score.label] = label
    if rules.concordance is not None:
        labels = (texts.get("concordance") or {}).get("labels") or {}
        for pair in (rules.concordance.total, *rules.concordance.domains):
            if pair.label and labels.get(pair.code):
                swaps[pair.label] = labels[pair.code]
    return swaps


def _decimal_comma(text: str) -> str:
    """35.9 → 35,9: French and Spanish write decimals with a comma."""
    return _NUMBER.sub(r"\1,\2", text)


def check_catalogue(rules: ScoringRules, catalogue: Mapping[str, Any], languages: list[str]) -> None:
    """ValueError naming what is missing: every language the Questionnaire offers (besides English) needs every
    Flag message (with the English one's placeholders), label and askAbout phrase of the instrument translated."""
    for lang in languages:
        texts = catalogue.get(lang, {})  # an unscored form has nothing to translate, and needs no texts.json
        if not isinstance(texts, dict):
            raise ValueError(f"'{lang}' must map to an object of texts")
        flags, items, scores = texts.get("flags") or {}, texts.get("items") or {}, texts.get("scores") or {}
        for rule in rules.flags:
            _check_message(lang, f"flag '{rule.id}' message", rule.message, flags.get(rule.id))
        for item in rules.itemScores:
            for key in ("label", "askAbout"):
                if getattr(item, key) and not (items.get(item.linkId) or {}).get(key):
                    raise ValueError(f"no '{lang}' translation of item '{item.linkId}' {key}")
        for score in rules.scores:
            if score.label and not scores.get(score.id):
                raise ValueError(f"no '{lang}' translation of score '{score.id}' label")
        unknown = (set(flags) - {r.id for r in rules.flags}) | (set(items) - {i.linkId for i in rules.itemScores})
        if unknown:
            raise ValueError(f"'{lang}' translates what scoring.json does not have: {', '.join(sorted(unknown))}")
        spec = rules.concordance
        if spec is not None:
            given = texts.get("concordance") or {}
            _check_message(lang, "concordance flag message", spec.flag.message, given.get("flag"))
            for pair in (spec.total, *spec.domains):
                if pair.label and not (given.get("labels") or {}).get(pair.code):
                    raise ValueError(f"no '{lang}' translation of concordance label '{pair.code}'")


def _check_message(lang: str, what: str, english: str, translated: Any) -> None:
    if not isinstance(translated, str) or not translated.strip():
        raise ValueError(f"no '{lang}' translation of {what}")
    if placeholders(translated) != placeholders(english):
        raise ValueError(f"the '{lang}' {what} must use the placeholders {sorted(placeholders(english))}")

"""Flag rules and interpretations, evaluated on today's scores and the earlier sessions of the same rater
series.  Pure: the pipeline supplies history read through the repository; nothing here touches the database.
Every number comes from the rule's setting (settings.py) and every sentence from texts.py."""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_server.canonical import BASE
from fhir_server.scoring import texts
from fhir_server.scoring.rules import FlagRule, ScoringRules
from fhir_server.scoring.settings import ScoringSettings

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# HL7's B/W cannot tell reliable change from clinically significant change; reports must (terminology/README.md)
FIT_INTERPRETATION = f"{BASE}/CodeSystem/fit-interpretation"


@dataclass(frozen=True)
class TherapySession:
    """One earlier administration of the instrument for this client, by the same rater series."""

    effective: str
    scores: dict[str, Decimal]


@dataclass(frozen=True)
class RaisedFlag:
    rule: FlagRule
    score_ids: tuple[str, ...]  # the scores whose Observations raised it (the Flag's flag-detail)
    message: str


def evaluate_flags(
    rules: ScoringRules,
    scores: dict[str, Decimal | None],
    items: dict[str, Decimal],
    history: list[TherapySession],
    age_band: str,
    settings: ScoringSettings,
    series: str = "self",
) -> list[RaisedFlag]:
    """Flags today's scores raise.  ``history`` is the series' earlier sessions, newest first."""
    raised = []
    at = Evaluation(rules, scores, items, history, age_band, settings)
    for rule in rules.flags:
        if rule.onlyAtIntake and history:
            continue
        hit = _KINDS[rule.kind](rule, at)
        if hit is not None:
            score_ids, fields = hit
            message = rule.message.format_map(_Missing(fields))
            raised.append(RaisedFlag(rule, score_ids, texts.by_rater(series, message)))
    return raised


Hit = tuple[tuple[str, ...], dict[str, str]] | None


@dataclass(frozen=True)
class Evaluation:
    """What every rule looks at: today's scores and items, the series' earlier sessions (newest first), the
    client's age band and the site's settings."""

    rules: ScoringRules
    scores: dict[str, Decimal | None]
    items: dict[str, Decimal]
    history: list[TherapySession]
    band: str
    settings: ScoringSettings


def _threshold(rule: FlagRule, at: Evaluation) -> Hit:
    threshold = at.settings.threshold(at.rules, rule.setting, at.band)
    comparator = at.settings.comparator(at.rules, rule.setting)
    for score_id in rule.scores:
        value = at.scores.get(score_id)
        if value is not None and _COMPARE[comparator](value, threshold) != rule.unmet:
            fill = {"value": texts.plain(value), "condition": texts.condition(comparator, threshold, unmet=rule.unmet)}
            return (score_id,), fill
    return None


def _item_threshold(rule: FlagRule, at: Evaluation) -> Hit:
    threshold = at.settings.threshold(at.rules, rule.setting, at.band)
    compare = _COMPARE[at.settings.comparator(at.rules, rule.setting)]
    low = [
        item
        for item in at.rules.items_of(rule)
        if item.linkId in at.items and compare(at.items[item.linkId], threshold)
    ]
    if not low:
        return None
    named = [f"{item.label} {texts.plain(at.items[item.linkId])}" for item in low]
    ask = texts.joined([item.askAbout for item in low], "or")
    primary = at.rules.primary
    return ((primary.id,) if primary else ()), {"items": texts.joined(named), "ask": ask}


def _drop(rule: FlagRule, at: Evaluation) -> Hit:
    """A fall of at least the threshold from the previous session, in every score that fell so (a WAI-SR drop
    names each subscale that fell, not the first)."""
    threshold = at.settings.threshold(at.rules, rule.setting, at.band)
    fell = []
    for score_id in rule.scores:
        value, earlier = at.scores.get(score_id), _earlier(at.history, score_id)
        if value is not None and earlier and earlier[0] - value >= threshold:
            fell.append((score_id, earlier[0], value))
    if not fell:
        return None
    score_id, previous, value = fell[0]
    falls = [f"{_label(at.rules, s)} {texts.plain(p)} → {texts.plain(v)}" for s, p, v in fell]
    fill = {"value": texts.plain(value), "previous": texts.plain(previous), "change": texts.plain(previous - value)}
    return tuple(s for s, _, _ in fell), {**fill, "falls": texts.joined(falls)}


def _repeated(rule: FlagRule, at: Evaluation) -> Hit:
    threshold = at.settings.threshold(at.rules, rule.setting, at.band)
    comparator = at.settings.comparator(at.rules, rule.setting)
    window = at.settings.window(at.rules, rule.setting)
    for score_id in rule.scores:
        value, earlier = at.scores.get(score_id), _earlier(at.history, score_id)
        if value is None or len(earlier) < window - 1:
            continue
        if all(_COMPARE[comparator](v, threshold) for v in [value, *earlier[: window - 1]]):
            fill = {"value": texts.plain(value), "sessions": str(window)}
            return (score_id,), {**fill, "condition": texts.condition(comparator, threshold)}
    return None


def _decline(rule: FlagRule, at: Evaluation) -> Hit:
    """Lower at every one of the last ``window`` sessions, and lower overall by at least the threshold: tenths
    of a point on a hand-marked 10 cm line are noise, not a decline."""
    minimum = at.settings.threshold(at.rules, rule.setting, at.band)
    window = at.settings.window(at.rules, rule.setting)
    for score_id in rule.scores:
        value, earlier = at.scores.get(score_id), _earlier(at.history, score_id)
        if value is None or len(earlier) < window - 1:
            continue
        series = [*reversed(earlier[: window - 1]), value]  # oldest first
        falling = all(later < before for before, later in itertools.pairwise(series))
        if falling and series[0] - value >= minimum:
            fill = {"value": texts.plain(value), "sessions": str(window), "change": texts.plain(series[0] - value)}
            return (score_id,), {**fill, "trail": texts.trail(series)}
    return None


def _change_from_first(rule: FlagRule, at: Evaluation) -> Hit:
    threshold = at.settings.threshold(at.rules, rule.setting, at.band)
    for score_id in rule.scores:
        value, earlier = at.scores.get(score_id), _earlier(at.history, score_id)
        if value is not None and earlier and earlier[-1] - value >= threshold:
            intake = earlier[-1]
            fill = {"value": texts.plain(value), "intake": texts.plain(intake), "change": texts.plain(intake - value)}
            return (score_id,), fill
    return None


_KINDS = {
    "threshold": _threshold,
    "item-threshold": _item_threshold,
    "drop": _drop,
    "repeated": _repeated,
    "decline": _decline,
    "change-from-first": _change_from_first,
}


def window_depth(rules: ScoringRules, settings: ScoringSettings) -> int:
    """How many earlier sessions the rules look back over (at least the previous one)."""
    windows = [settings.window(rules, r.setting) for r in rules.flags if r.kind in ("repeated", "decline")]
    return max([2, *windows])


def interpretations(
    rules: ScoringRules,
    score_id: str,
    value: Decimal,
    history: list[TherapySession],
    age_band: str,
    settings: ScoringSettings,
) -> list[dict[str, Any]]:
    """Observation.interpretation entries for one score."""
    out: list[dict[str, Any]] = []
    for rule in rules.interpretations:
        if rule.score != score_id:
            continue
        if rule.kind == "cutoff":
            threshold = settings.threshold(rules, rule.setting, age_band)
            comparator = settings.comparator(rules, rule.setting)
            met = _COMPARE[comparator](value, threshold)
            text = texts.cutoff_interpretation(comparator, threshold, met)
            out.append({"coding": [{"system": V3, "code": "L" if met else "N"}], "text": text})
            continue
        earlier = _earlier(history, score_id)
        if not earlier:
            continue
        intake, change = earlier[-1], value - earlier[-1]
        if abs(change) < settings.threshold(rules, rule.setting, age_band):
            continue
        kind = "reliable-improvement" if change > 0 else "reliable-deterioration"
        coding = [{"system": V3, "code": "B" if change > 0 else "W"}, {"system": FIT_INTERPRETATION, "code": kind}]
        out.append({"coding": coding, "text": texts.change_from_intake(change)})
        if change > 0 and rule.cutoff is not None:
            # Jacobson-Truax: from the clinical range (the cutoff's comparison held at intake) to outside it.
            cutoff = settings.threshold(rules, rule.cutoff, age_band)
            compare = _COMPARE[settings.comparator(rules, rule.cutoff)]
            if compare(intake, cutoff) and not compare(value, cutoff):
                coding = [{"system": V3, "code": "B"},
                          {"system": FIT_INTERPRETATION, "code": "clinically-significant-improvement"}]  # fmt: skip
                out.append({"coding": coding, "text": texts.CLINICALLY_SIGNIFICANT})
    return out


def cutoff_of(
    rules: ScoringRules, score_id: str, age_band: str, settings: ScoringSettings
) -> tuple[str, Decimal] | None:
    """(comparator, threshold) of the score's cutoff interpretation, as this site runs it; None without one."""
    for rule in rules.interpretations:
        if rule.score == score_id and rule.kind == "cutoff":
            return settings.comparator(rules, rule.setting), settings.threshold(rules, rule.setting, age_band)
    return None


def _earlier(history: list[TherapySession], score_id: str) -> list[Decimal]:
    return [s.scores[score_id] for s in history if score_id in s.scores]


def _label(rules: ScoringRules, score_id: str) -> str:
    score = rules.score(score_id)
    return (score.label or score.display or score_id) if score else score_id


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

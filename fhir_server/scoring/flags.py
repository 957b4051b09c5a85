"""Flag rules and interpretations, evaluated on today's scores and the client's earlier sessions.  Pure: the
pipeline supplies history read through the repository; nothing here touches the database."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_server.scoring.rules import Comparator, FlagRule, Interpretation, ScoringRules, Threshold

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@dataclass(frozen=True)
class Session:
    """One earlier administration of the instrument for this client (same respondent series)."""

    effective: str
    scores: dict[str, Decimal]


@dataclass(frozen=True)
class RaisedFlag:
    rule: FlagRule
    score_id: str | None  # the score whose Observation raised it (Flag's flag-detail), if any
    message: str


class Settings:
    """Site overrides of rule parameters, keyed ``<setting>.<field>`` (e.g. ``srs-cutoff.comparator: "<="``)."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.overrides = overrides or {}

    def threshold(self, setting: str | None, default: Threshold, age_band: str) -> Decimal:
        value = self.overrides.get(f"{setting}.threshold", default) if setting else default
        if isinstance(value, dict):
            value = value.get(age_band, value.get("adult", next(iter(value.values()))))
        return Decimal(str(value))

    def comparator(self, setting: str | None, default: Comparator) -> Comparator:
        value = self.overrides.get(f"{setting}.comparator", default) if setting else default
        return value if value in _COMPARE else default

    def window(self, setting: str | None, default: int) -> int:
        return int(self.overrides.get(f"{setting}.window", default)) if setting else default

    def uses_age_bands(self, rules: ScoringRules) -> bool:
        """Whether any threshold these rules read (defaults and site overrides, as ``threshold`` reads them)
        depends on the age band: if none does, scoring needs no birth date."""
        values: list[Any] = []
        for rule in rules.flags:
            values.append(
                self.overrides.get(f"{rule.setting}.threshold", rule.threshold) if rule.setting else rule.threshold
            )
        for interp in rules.interpretations:
            setting = interp.setting
            values.append(self.overrides.get(f"{setting}.threshold", interp.threshold) if setting else interp.threshold)
            if interp.cutoff is not None:
                values.append(
                    self.overrides.get(f"{setting}-cutoff.threshold", interp.cutoff) if setting else interp.cutoff
                )
        return any(isinstance(v, dict) for v in values)


def evaluate_flags(
    rules: ScoringRules,
    scores: dict[str, Decimal | None],
    items: dict[str, Decimal],
    history: list[Session],
    age_band: str,
    settings: Settings,
) -> list[RaisedFlag]:
    """Flags today's scores raise.  ``history`` is the client's earlier sessions, newest first."""
    raised = []
    for rule in rules.flags:
        threshold = settings.threshold(rule.setting, rule.threshold, age_band)
        comparator = settings.comparator(rule.setting, rule.comparator)
        window = settings.window(rule.setting, rule.window)
        hit = _evaluate(rule, scores, items, history, threshold, comparator, window, rules)
        if hit is not None:
            score_id, fill = hit
            fields = {"threshold": _plain(threshold), **fill}
            raised.append(RaisedFlag(rule, score_id, rule.message.format_map(_Defaults(fields))))
    return raised


def _evaluate(
    rule: FlagRule,
    scores: dict[str, Decimal | None],
    items: dict[str, Decimal],
    history: list[Session],
    threshold: Decimal,
    comparator: Comparator,
    window: int,
    rules: ScoringRules,
) -> tuple[str | None, dict[str, str]] | None:
    compare = _COMPARE[comparator]
    if rule.onlyAtIntake and history:
        return None
    if rule.kind == "item-threshold":
        names = rule.items or [i.linkId for i in rules.itemScores]
        low = [n for n in names if n in items and compare(items[n], threshold)]
        if not low:
            return None
        labels = [(rules.item(n).display if rules.item(n) else n) or n for n in low]
        return (_first_own(rules), {"items": ", ".join(labels), "value": _plain(min(items[n] for n in low))})
    for score_id in rule.scores:
        value = scores.get(score_id)
        if value is None:
            continue
        earlier = [s.scores[score_id] for s in history if score_id in s.scores]
        fill = {"value": _plain(value), "score": score_id}
        if rule.kind == "threshold" and compare(value, threshold):
            return score_id, fill
        if rule.kind == "drop" and earlier and earlier[0] - value >= threshold:
            return score_id, {**fill, "previous": _plain(earlier[0]), "change": _plain(earlier[0] - value)}
        if rule.kind == "repeated" and len(earlier) >= window - 1:
            series = [value, *earlier[: window - 1]]
            if all(compare(v, threshold) for v in series):
                return score_id, fill
        if rule.kind == "decline" and len(earlier) >= window - 1:
            series = [value, *earlier[: window - 1]]  # newest first: each must be below the one before it
            if all(series[i] < series[i + 1] for i in range(len(series) - 1)) and len(series) >= 2:
                return score_id, {**fill, "sessions": str(len(series))}
        if rule.kind == "change-from-first" and earlier and earlier[-1] - value >= threshold:
            return score_id, {**fill, "intake": _plain(earlier[-1]), "change": _plain(earlier[-1] - value)}
    return None


def interpretations(
    rules: ScoringRules,
    score_id: str,
    value: Decimal,
    history: list[Session],
    age_band: str,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Observation.interpretation entries for one score."""
    out: list[dict[str, Any]] = []
    for rule in rules.interpretations:
        if rule.score != score_id:
            continue
        threshold = settings.threshold(rule.setting, rule.threshold, age_band)
        if rule.kind == "cutoff":
            below = _COMPARE[settings.comparator(rule.setting, rule.comparator)](value, threshold)
            code, text = (
                ("L", f"Below the cutoff ({_plain(threshold)})")
                if below
                else ("N", f"At or above the cutoff ({_plain(threshold)})")
            )
            out.append({"coding": [{"system": V3, "code": code}], "text": text})
        elif rule.kind == "reliable-change":
            out.extend(_reliable_change(rule, value, history, threshold, age_band, settings))
    return out


def reference_range(rules: ScoringRules, score_id: str, age_band: str, settings: Settings) -> Decimal | None:
    """The lower bound of the non-clinical range of a score (its cutoff for this client's age band and this
    site), for Observation.referenceRange; None when the instrument publishes no cutoff for the score."""
    for rule in rules.interpretations:
        if rule.score == score_id and rule.kind == "cutoff":
            return settings.threshold(rule.setting, rule.threshold, age_band)
    return None


def _reliable_change(
    rule: Interpretation, value: Decimal, history: list[Session], threshold: Decimal, age_band: str, settings: Settings
) -> list[dict[str, Any]]:
    earlier = [s.scores[rule.score] for s in history if rule.score in s.scores]
    if not earlier:
        return []
    intake = earlier[-1]
    change = value - intake
    if change >= threshold:
        out = [
            {"coding": [{"system": V3, "code": "B"}], "text": f"Reliable improvement since intake (+{_plain(change)})"}
        ]
        if rule.cutoff is not None:
            cutoff = settings.threshold(f"{rule.setting}-cutoff" if rule.setting else None, rule.cutoff, age_band)
            if intake < cutoff <= value:
                out.append({"coding": [{"system": V3, "code": "B"}], "text": "Clinically significant change"})
        return out
    if -change >= threshold:
        return [
            {"coding": [{"system": V3, "code": "W"}], "text": f"Reliable deterioration since intake ({_plain(change)})"}
        ]
    return []


def _first_own(rules: ScoringRules) -> str | None:
    return next((s.id for s in rules.scores if s.observation == "own"), None)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

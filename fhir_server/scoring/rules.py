"""The schema of an instrument's scoring rules (questionnaires/<id>/scoring.json), checked when it is loaded.

Item scores say how to read an answer (a VAS mark in millimetres divided by 10, or a choice's ordinalValue);
scores combine item scores by sum or mean, only when every item is answered (no proration, as the instruments'
authors specify).
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemScore(_Strict):
    linkId: str
    code: str
    display: str = ""
    read: Literal["integer", "decimal", "ordinal"]
    divideBy: Decimal = Decimal(1)


class Score(_Strict):
    id: str
    linkId: str
    code: str
    display: str = ""
    method: Literal["sum", "mean"]
    items: list[str] = Field(min_length=1)
    decimals: int = Field(ge=0, le=4)
    min: Decimal
    max: Decimal
    unit: str = "{score}"
    snomed: str | None = None
    # "own": an Observation of its own (totals, WAI-SR subscale sums); "component": only a component of the
    # instrument's Observations (WAI-SR means go with their sums, named in ``components``).
    observation: Literal["own", "component"] = "own"
    components: list[str] = []


Comparator = Literal["<", "<=", ">", ">="]
Threshold = Decimal | dict[str, Decimal]  # one value, or one per age band (child / adolescent / adult)


class FlagRule(_Strict):
    """A clinical prompt raised by scores, as data.  ``kind`` picks the test; ``setting`` names the site
    overrides (``<setting>.threshold``, ``<setting>.comparator``, ``<setting>.window``)."""

    id: str
    code: str  # in the fit-flags CodeSystem
    display: str = ""
    kind: Literal["threshold", "drop", "item-threshold", "repeated", "decline", "change-from-first"]
    scores: list[str] = []  # score ids the rule reads (threshold, drop, repeated, decline, change-from-first)
    items: list[str] = []  # item linkIds (item-threshold); empty means every scored item
    comparator: Comparator = "<"
    threshold: Threshold = Decimal(0)
    window: int = Field(default=1, ge=1, le=20)
    severity: Literal["high", "medium", "low", "info"]
    message: str  # the curious, non-defensive follow-up question; {value}, {threshold}, {items} are filled in
    setting: str | None = None
    onlyAtIntake: bool = False  # raised only on the client's first administration (no earlier session)


class Interpretation(_Strict):
    """Observation.interpretation from a score: below/at-or-above a cutoff, reliable change from intake, and
    clinically significant change (Jacobson-Truax: from below the cutoff to at/above it, with reliable change)."""

    kind: Literal["cutoff", "reliable-change"]
    score: str
    threshold: Threshold
    cutoff: Threshold | None = None  # reliable-change: the clinical cutoff for clinically significant change
    comparator: Comparator = "<"
    setting: str | None = None


class ScoringRules(_Strict):
    instrument: str
    questionnaire: str
    itemScores: list[ItemScore] = []
    scores: list[Score] = []
    cutoffs: dict[str, Any] = {}  # documentation of the published cutoffs and their sources
    flags: list[FlagRule] = []
    interpretations: list[Interpretation] = []

    @model_validator(mode="after")
    def _scores_use_known_items(self) -> ScoringRules:
        known = {item.linkId for item in self.itemScores}
        for score in self.scores:
            unknown = [i for i in score.items if i not in known]
            if unknown:
                raise ValueError(f"score '{score.id}' uses items with no itemScore: {', '.join(unknown)}")
        ids = [s.id for s in self.scores]
        if len(ids) != len(set(ids)):
            raise ValueError("score ids must be unique")
        for rule in self.flags:
            unknown = [s for s in rule.scores if s not in ids] + [i for i in rule.items if i not in known]
            if unknown:
                raise ValueError(f"flag '{rule.id}' refers to unknown scores or items: {', '.join(unknown)}")
        for score in self.scores:
            unknown = [c for c in score.components if c not in ids]
            if unknown:
                raise ValueError(f"score '{score.id}' lists unknown component scores: {', '.join(unknown)}")
        return self

    def score(self, score_id: str) -> Score | None:
        return self._by_id[0].get(score_id)

    def item(self, link_id: str) -> ItemScore | None:
        return self._by_id[1].get(link_id)

    @cached_property
    def _by_id(self) -> tuple[dict[str, Score], dict[str, ItemScore]]:
        """Looked up for every item of every submission; the rules never change once loaded."""
        return {s.id: s for s in self.scores}, {i.linkId: i for i in reversed(self.itemScores)}  # the first wins


class RulesError(ValueError):
    """A scoring file that does not follow the schema; the message names the file and the problem."""


def load_rules(path: Path) -> ScoringRules:
    try:
        return ScoringRules.model_validate(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise RulesError(f"{path}: not valid JSON ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise RulesError(f"{path}: {problems}") from None

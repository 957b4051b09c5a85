"""The schema of an instrument's scoring rules (questionnaires/<id>/scoring.json), checked when it is loaded.

Item scores say how to read an answer (a VAS mark in millimetres divided by 10, or a choice's ordinalValue);
scores combine item scores by sum or mean, only when every item is answered (no proration, as the instruments'
authors specify).
"""

from __future__ import annotations

from decimal import Decimal
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


class ScoringRules(_Strict):
    instrument: str
    questionnaire: str
    itemScores: list[ItemScore] = []
    scores: list[Score] = []
    cutoffs: dict[str, Any] = {}
    flags: list[dict[str, Any]] = []

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
        return self

    def item(self, link_id: str) -> ItemScore | None:
        return next((i for i in self.itemScores if i.linkId == link_id), None)


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

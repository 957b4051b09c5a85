"""The schema of an indicator's definition (indicators/<id>/indicator.json), checked when the library loads.

An indicator is a FHIR ``Measure`` (``measure.json``: what it means, its populations and stratifiers, in words)
and this file: how each of the Measure's groups is counted, as one of a closed set of **rules** over the reporting
index (reporting/facts.py; each rule's SQL is in store/report_units.py).  Adding an indicator is adding a folder; a
new kind of counting is a new rule.

Rules (``unit``: what one member of the population is):
- ``session-has`` (session): sessions with a result of ``denominator`` codes (or, with ``orEncounter``, any result
  filed under an Encounter); numerator: those also holding a result of ``numerator`` codes.
- ``score-share`` (result): results of ``codes``; numerator: ``below`` the cutoff as scored, ``atLeast`` a value,
  or carrying a ``change`` interpretation.
- ``score-mean`` (result): results of ``codes``; the measure score is their mean.
- ``flag-followed-up`` (Flag): Flags of ``codes`` raised in the period; numerator: acknowledged at or before the
  client's next result of ``next`` codes (same rater) and that result not below the cutoff; excluded: no next
  result yet.
- ``early-dropout`` (client): clients whose first session is in the period; numerator: at most ``maxSessions``
  sessions and none in the N days up to the period's end (FHIR_SERVER_DROPOUT_DAYS, 30); excluded: first session
  within those days.
- ``change-from-intake`` (client): clients whose last result of ``codes`` in the period is not their intake (their
  first ever); a proportion of those whose last result carries ``change``, or (no ``change``) the mean of last
  minus intake.

Only the client's own ratings count (the ``self`` rater series): a parent's rating of a child is another series; a
score rule with ``"rater": "clinician"`` counts the clinicians' instead (their rating of a session, its gap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

STRATIFIERS = ("program", "clinician", "month", "age-band", "instrument")
POPULATIONS = {  # the Measure population codes each rule reports (measure-population CodeSystem)
    "proportion": ("initial-population", "denominator", "numerator"),
    "proportion-excluding": ("initial-population", "denominator", "denominator-exclusion", "numerator"),
    "continuous-variable": ("initial-population", "measure-population", "measure-observation"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionHas(_Strict):
    rule: Literal["session-has"]
    denominator: tuple[str, ...] = Field(min_length=1)
    orEncounter: bool = False
    numerator: tuple[str, ...] = Field(min_length=1)


# Whose ratings a score rule counts: the client's own (the "self" rater series) or a clinician's (their rating of
# a session, and its gap with the client's: scoring/concordance.py).
RATERS = {"client": "self", "clinician": "clinician"}


class ScoreShare(_Strict):
    rule: Literal["score-share"]
    codes: tuple[str, ...] = Field(min_length=1)
    rater: Literal["client", "clinician"] = "client"
    below: bool = False
    atLeast: float | None = None
    change: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> ScoreShare:
        if sum((self.below, self.atLeast is not None, self.change is not None)) != 1:
            raise ValueError("score-share needs exactly one of 'below', 'atLeast', 'change'")
        return self


class ScoreMean(_Strict):
    rule: Literal["score-mean"]
    codes: tuple[str, ...] = Field(min_length=1)
    rater: Literal["client", "clinician"] = "client"


class FlagFollowedUp(_Strict):
    rule: Literal["flag-followed-up"]
    codes: tuple[str, ...] = Field(min_length=1)
    next: tuple[str, ...] = Field(min_length=1)


class EarlyDropout(_Strict):
    rule: Literal["early-dropout"]
    codes: tuple[str, ...] = Field(min_length=1)  # the results that make a session
    maxSessions: int = Field(ge=1)  # the days without a session are the site's FHIR_SERVER_DROPOUT_DAYS (30)


class ChangeFromIntake(_Strict):
    rule: Literal["change-from-intake"]
    codes: tuple[str, ...] = Field(min_length=1)
    change: str | None = None


Rule = Annotated[
    SessionHas | ScoreShare | ScoreMean | FlagFollowedUp | EarlyDropout | ChangeFromIntake,
    Field(discriminator="rule"),
]


class Group(_Strict):
    code: str = Field(pattern=r"^[a-z0-9-]{1,64}$")  # the Measure group's code (fit-indicators)
    count: Rule
    unit: str = ""  # the measure score's unit for a mean ("{score}")

    @property
    def scoring(self) -> str:
        if isinstance(self.count, ScoreMean) or (isinstance(self.count, ChangeFromIntake) and not self.count.change):
            return "continuous-variable"
        return "proportion"

    @property
    def populations(self) -> tuple[str, ...]:
        if self.scoring == "continuous-variable":
            return POPULATIONS["continuous-variable"]
        excludes = isinstance(self.count, FlagFollowedUp | EarlyDropout)
        return POPULATIONS["proportion-excluding" if excludes else "proportion"]

    def codes(self) -> set[str]:
        """The fit-measures and fit-flags codes it counts (checked against the library's scoring rules)."""
        count = self.count
        if isinstance(count, SessionHas):
            return {*count.denominator, *count.numerator}
        if isinstance(count, FlagFollowedUp):
            return {*count.codes, *count.next}
        return set(getattr(count, "codes", ()))


class Definition(_Strict):
    measure: str  # the Measure's url
    groups: tuple[Group, ...] = Field(min_length=1)
    stratifiers: tuple[Literal["program", "clinician", "month", "age-band", "instrument"], ...]


class DefinitionError(ValueError):
    pass


def load_definition(path: Path) -> Definition:
    try:
        return Definition.model_validate(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DefinitionError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DefinitionError(f"{path}: {where}: {first['msg']}") from None

"""The schema of an instrument's scoring rules (questionnaires/<id>/scoring.json), checked when it is loaded.

Item scores say how to read an answer (a VAS mark in millimetres divided by 10, or a choice's ordinalValue);
scores combine item scores by sum or mean, only when every item is answered (no proration, as the instruments'
authors specify).

Every number a rule compares with lives in one named **setting** (``settings``): its threshold, comparator and
window, its published source and confidence.  Flag rules and interpretations name the setting they read, so a
derived statement (an interpretation, a referenceRange, a Flag's text, clinically significant change) uses the
same values as the rule it derives from, and a site override ``<setting>.<field>`` changes all of them at once.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AGE_BANDS = ("child", "adolescent", "adult")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemScore(_Strict):
    linkId: str
    code: str
    display: str = ""
    # The instrument's own domain label ("Relationship"), for clinicians, and a project-written phrase for the
    # client ("how heard and understood you felt"): rule texts never show internal ids or codes.
    label: str = ""
    askAbout: str = ""
    read: Literal["integer", "decimal", "ordinal"]
    divideBy: Decimal = Decimal(1)


class Score(_Strict):
    id: str
    linkId: str
    code: str
    display: str = ""
    label: str = ""  # how a clinician says it in a sentence ("Bond"): Flag texts use it
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
Threshold = Decimal | dict[Literal["child", "adolescent", "adult"], Decimal]  # one value, or one per age band


class Setting(_Strict):
    """One rule's numbers.  ``threshold`` is a cutoff (threshold, item-threshold, repeated, cutoff rules) or a
    minimum change (drop, decline, change-from-first, reliable-change rules); a site may override each field it
    declares, as ``<name>.<field>``."""

    threshold: Threshold
    comparator: Comparator | None = None
    window: int | None = Field(default=None, ge=2, le=20)
    confidence: str | dict[str, str] = "?"
    source: str
    alternatives: dict[str, Decimal] = {}

    def fields(self) -> set[str]:
        return {"threshold"} | {f for f in ("comparator", "window") if getattr(self, f) is not None}


# What each kind of rule reads from its setting: a setting must declare exactly the fields its rules read.
NEEDS: dict[str, set[str]] = {
    "threshold": {"threshold", "comparator"},
    "item-threshold": {"threshold", "comparator"},
    "repeated": {"threshold", "comparator", "window"},
    "drop": {"threshold"},
    "decline": {"threshold", "window"},
    "change-from-first": {"threshold"},
    "cutoff": {"threshold", "comparator"},
    "reliable-change": {"threshold"},
    "gap": {"threshold"},
}


class FlagRule(_Strict):
    """A clinical prompt raised by scores, as data.  ``kind`` picks the test, ``setting`` its numbers."""

    id: str
    code: str  # in the fit-flags CodeSystem
    display: str = ""
    kind: Literal["threshold", "drop", "item-threshold", "repeated", "decline", "change-from-first"]
    scores: list[str] = []  # score ids the rule reads (threshold, drop, repeated, decline, change-from-first)
    items: list[str] = []  # item linkIds (item-threshold); empty means every scored item
    setting: str
    # A threshold rule raised when its setting's test is NOT met (an intake outside the clinical range the
    # cutoff rule's setting defines): the two can never disagree about where the cutoff is.
    unmet: bool = False
    severity: Literal["high", "medium", "low", "info"]
    message: str  # the curious, non-defensive follow-up question; placeholders are filled by scoring/texts.py
    onlyAtIntake: bool = False  # raised only on the series' first administration (no earlier session)


class Interpretation(_Strict):
    """Observation.interpretation from a score: below/at-or-above a cutoff, reliable change from intake, and
    clinically significant change (Jacobson-Truax: from the clinical range to outside it, with reliable change)."""

    kind: Literal["cutoff", "reliable-change"]
    score: str
    setting: str
    cutoff: str | None = None  # reliable-change: the cutoff setting for clinically significant change


class AgeRange(_Strict):
    """The ages the form is made for; a form given outside them is scored with a note saying so."""

    min: int | None = None
    max: int | None = None
    instead: str = ""  # which form fits other ages, said in the note


class Administered(_Strict):
    """When a clinician hands the form to the client: the app's "Choose the measure" page lists the instruments
    that say so (in this order: start, end, every few sessions), and the clinician view's by-session trend plots
    the ones given at every session (``start`` or ``end``).  An instrument without it is opened only by name (a
    launch's ``measure=``, a CDS card)."""

    when: Literal["start", "end", "every-few-sessions"]
    # The chooser's name for it, when not the Questionnaire's title (empty, or text without blanks at either end)
    title: str = Field(default="", pattern=r"^(\S(.*\S)?)?$")


class GapPair(_Strict):
    """One number of the clinician's rating beside the client's number for the same thing (fit-measures codes)."""

    rater: str  # the clinician's number (an item or the total)
    client: str  # the client's number
    code: str  # the gap's code: rater - client
    display: str = ""
    label: str = ""  # the instrument's domain label ("Goals and Topics"), said in the Flag's question


class GapFlag(_Strict):
    """Raised when the clinician rated the session higher than the client by at least a setting's threshold: on the
    total (``totalSetting``) or on any one domain (``domainSetting``)."""

    id: str
    code: str  # in the fit-flags CodeSystem
    display: str = ""
    severity: Literal["high", "medium", "low", "info"]
    totalSetting: str
    domainSetting: str
    # after both totals (scoring/texts.py rated_apart); {domains}: the domains the client rated lower by the domain
    # margin, largest gap first ("today's session" when only the total's margin was reached)
    message: str


class Concordance(_Strict):
    """A clinician-rated instrument's gap with a client-rated one for the same session (scoring/concordance.py):
    when both exist for one Encounter, whichever arrives second, an Observation of therapist - client."""

    client: str  # the client's Questionnaire url
    total: GapPair
    domains: list[GapPair] = Field(min_length=1)
    flag: GapFlag


class ScoringRules(_Strict):
    instrument: str
    questionnaire: str
    # "alliance" (SRS, CSRS, WAI-SR: a cutoff prompts a conversation) or "outcome" (ORS, CORS: a clinical range)
    domain: Literal["alliance", "outcome", "engagement"] = "outcome"
    # Who rates: the client (or someone for them: the respondent item), or the clinician, whose ratings form their
    # own series ("clinician"), never compared with the client's, and are kept from patient-context tokens.
    rater: Literal["client", "clinician"] = "client"
    ages: AgeRange | None = None
    administered: Administered | None = None
    itemScores: list[ItemScore] = []
    scores: list[Score] = []
    settings: dict[str, Setting] = {}
    flags: list[FlagRule] = []
    interpretations: list[Interpretation] = []
    concordance: Concordance | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> ScoringRules:
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
            if rule.kind == "item-threshold":
                unlabelled = [i.linkId for i in self.items_of(rule) if not (i.label and i.askAbout)]
                if unlabelled:
                    raise ValueError(f"flag '{rule.id}' needs a label and askAbout on items {', '.join(unlabelled)}")
        if self.concordance is not None:
            codes = {i.code for i in self.itemScores} | {s.code for s in self.scores}
            pairs = [self.concordance.total, *self.concordance.domains]
            unknown = [p.rater for p in pairs if p.rater not in codes]
            if unknown:
                raise ValueError(f"concordance pairs numbers this instrument does not score: {', '.join(unknown)}")
        for score in self.scores:
            unknown = [c for c in score.components if c not in ids]
            if unknown:
                raise ValueError(f"score '{score.id}' lists unknown component scores: {', '.join(unknown)}")
        self._check_settings()
        return self

    def _check_settings(self) -> None:
        """Every rule names a declared setting with the fields its kind reads, and every declared field is read
        by some rule: no setting a site could change to no effect."""
        used: dict[str, set[str]] = {name: set() for name in self.settings}
        reads = [(f"flag '{r.id}'", r.setting, NEEDS[r.kind]) for r in self.flags]
        reads += [(f"interpretation of '{i.score}'", i.setting, NEEDS[i.kind]) for i in self.interpretations]
        reads += [
            (f"interpretation of '{i.score}'", i.cutoff, NEEDS["cutoff"]) for i in self.interpretations if i.cutoff
        ]
        if self.concordance is not None:
            gap = self.concordance.flag
            reads += [(f"flag '{gap.id}'", name, NEEDS["gap"]) for name in (gap.totalSetting, gap.domainSetting)]
        for who, name, needs in reads:
            setting = self.settings.get(name)
            if setting is None:
                raise ValueError(f"{who} names setting '{name}', which 'settings' does not declare")
            missing = needs - setting.fields()
            if missing:
                raise ValueError(f"setting '{name}' lacks {', '.join(sorted(missing))}, which {who} reads")
            used[name] |= needs
        for name, setting in self.settings.items():
            unused = setting.fields() - used[name]
            if unused:
                raise ValueError(f"setting '{name}' declares {', '.join(sorted(unused))}, which no rule reads")

    def score(self, score_id: str) -> Score | None:
        return self._by_id[0].get(score_id)

    def item(self, link_id: str) -> ItemScore | None:
        return self._by_id[1].get(link_id)

    def items_of(self, rule: FlagRule) -> list[ItemScore]:
        names = rule.items or [i.linkId for i in self.itemScores]
        return [item for name in names if (item := self.item(name)) is not None]

    @property
    def primary(self) -> Score | None:
        """The first score with its own Observation (the total): the series scoring reads history by."""
        return next((s for s in self.scores if s.observation == "own"), None)

    def observation_of(self, score_id: str) -> Score | None:
        """The score whose Observation carries ``score_id``: itself, or the own score with the fewest
        components that lists it (a WAI-SR subscale mean is on its subscale sum's Observation)."""
        score = self.score(score_id)
        if score is not None and score.observation == "own":
            return score
        carriers = [s for s in self.scores if s.observation == "own" and score_id in s.components]
        return min(carriers, key=lambda s: len(s.components), default=None)

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

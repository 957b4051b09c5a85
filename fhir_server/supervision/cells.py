"""One cell of the supervision page — a Measure group overall, one month, one program or one clinician — as the
page and its CSV show it, read from a MeasureReport group or stratum (reporting/evaluate.py): the measure score,
its 95 % interval (extension ``measurereport-interval``: Wilson for a rate, normal for a mean), its counts and the
number of distinct clients it counts (extension ``measurereport-clients``).

Small cells are suppressed here, once, for the page and the CSV alike: a cell counting fewer distinct clients than
``FHIR_SERVER_REPORT_MIN_CLIENTS`` keeps only that it is small — no score, no interval and no counts (a numerator
and a denominator would give the score back).  A cell of no client at all is not suppressed: it is empty.  When a
stratifier has exactly one small cell, its smallest sibling is suppressed with it (``complement``): otherwise the
overall counts less the siblings' would give the small cell back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.reporting.evaluate import CLIENTS, INTERVAL

# What one member of each counting rule's population is (reporting/definitions.py), for "12 of 40 sessions"
MEMBERS = {
    "session-has": "sessions",
    "score-share": "ratings",
    "score-mean": "ratings",
    "flag-followed-up": "concerns",
    "early-dropout": "clients",
    "change-from-intake": "clients",
}


@dataclass(frozen=True)
class Cell:
    key: str  # "" (the group overall), a month "2026-03", or a reference "Organization/x"
    clients: int
    suppressed: bool
    score: float | None = None  # None when suppressed, or with nothing to score (an empty denominator)
    low: float | None = None  # the 95 % interval (None below two observations of a mean)
    high: float | None = None
    numerator: int | None = None  # proportions only
    n: int | None = None  # the score's base: the denominator less exclusions, or a mean's observations

    @property
    def empty(self) -> bool:
        return self.clients == 0


@dataclass(frozen=True)
class Style:
    """How one group's numbers are written: a rate in whole percent, a mean with one decimal (two on a small
    scale such as the WAI-SR's 1-5), and what its members are."""

    proportion: bool
    members: str
    decimals: int = 1

    @property
    def unit(self) -> str:
        return "%" if self.proportion else ""

    def number(self, value: float | None) -> str:
        if value is None:
            return ""
        return f"{value * 100:.0f}" if self.proportion else f"{value:.{self.decimals}f}"

    def value(self, cell: Cell) -> str:
        """The score as text with its unit ("62 %", "36.4"), or "" when there is none to show."""
        shown = self.number(cell.score)
        return f"{shown} {self.unit}".strip() if shown else ""

    def interval(self, cell: Cell) -> str:
        if cell.low is None or cell.high is None:
            return ""
        return f"{self.number(cell.low)} to {self.number(cell.high)} {self.unit}".strip()

    def counts(self, cell: Cell) -> str:
        """What the score counts ("12 of 40 sessions, 18 clients"); nothing for a suppressed cell."""
        if cell.suppressed or cell.n is None:
            return ""
        counted = f"{cell.numerator} of {cell.n} {self.members}" if self.proportion else f"{cell.n} {self.members}"
        if self.members == "clients":  # the members are the clients: saying it twice says nothing more
            return counted
        return f"{counted}, {cell.clients} client{'s' if cell.clients != 1 else ''}"


def style_for(rule: str, scoring: str, cells: list[Cell]) -> Style:
    proportion = scoring == "proportion"
    largest = max((abs(v) for c in cells for v in (c.score, c.low, c.high) if v is not None), default=0.0)
    return Style(proportion, MEMBERS.get(rule, "counted"), 2 if not proportion and largest <= 5 else 1)


def read_cell(key: str, part: dict[str, Any], *, proportion: bool, minimum: int) -> Cell:
    """``part``: a MeasureReport group or stratum; ``minimum``: the fewest distinct clients a cell may show."""
    clients = _extension(part, CLIENTS).get("valueInteger", 0)
    if clients < minimum:
        return Cell(key, clients, suppressed=clients > 0)
    counts = {p["code"]["coding"][0]["code"]: p.get("count", 0) for p in part.get("population", [])}
    interval = _extension(part, INTERVAL).get("valueRange") or {}
    score = part.get("measureScore", {}).get("value")
    if proportion:
        numerator = counts.get("numerator", 0)
        n = counts.get("denominator", 0) - counts.get("denominator-exclusion", 0)
    else:
        numerator, n = None, counts.get("measure-observation", 0)
    return Cell(
        key,
        clients,
        suppressed=False,
        score=float(score) if score is not None else None,
        low=_bound(interval.get("low")),
        high=_bound(interval.get("high")),
        numerator=numerator,
        n=n,
    )


def complement(cells: dict[str, Cell]) -> dict[str, Cell]:
    """Complementary suppression: one suppressed cell among siblings that add up to the shown overall can be
    worked out by subtraction, so the sibling with the fewest clients is suppressed too."""
    small = [c for c in cells.values() if c.suppressed]
    shown = [c for c in cells.values() if not c.suppressed and not c.empty]
    if len(small) != 1 or not shown:
        return cells
    partner = min(shown, key=lambda c: (c.clients, c.key))
    return {key: Cell(key, c.clients, suppressed=True) if c is partner else c for key, c in cells.items()}


def _extension(part: dict[str, Any], url: str) -> dict[str, Any]:
    return next((e for e in part.get("extension", []) if e.get("url") == url), {})


def _bound(quantity: Any) -> float | None:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    return float(value) if value is not None else None

"""What the supervision page shows, assembled from the supervisors' indicators (indicators/, reporting/evaluate.py)
as the signed-in user may see them (reporting/access.py, under the guarded engine of their token).

For a period of whole months (default: the twelve months up to and including this one, counted up to now) and a
scope (default: every organisation the user supervises, with the programs nested in them; or one of those), each
indicator is evaluated once, as ``$evaluate-measure`` would for that subject; the page takes from each report
- every group overall and by month (the month stratifier), charted;
- the programs side by side (the program stratifier) and, once an organisation is chosen (or the user supervises
  only one), its clinicians side by side (the clinician stratifier);
- the Measure's description, purpose, and its groups' and populations' descriptions, so a number can be read.
Every cell is suppressed below ``FHIR_SERVER_REPORT_MIN_CLIENTS`` distinct clients (supervision/cells.py).  Drill
down goes to counts only: the page never names a client, even for a user with patient access.

Every evaluation is audited as the operation's is (the guarded engine's ``record_operation``), and so is a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access
from fhir_server.auth.guard import GuardedInteractions
from fhir_server.errors import FhirError
from fhir_server.reporting.access import reachable, scope_for
from fhir_server.reporting.evaluate import evaluate, make_request
from fhir_server.reporting.indicators import Indicator
from fhir_server.reporting.scope import Window
from fhir_server.store.report_connections import report_connections
from fhir_server.supervision.cells import Cell, Style, complement, read_cell, style_for
from fhir_server.supervision.charts import month_chart, month_label
from fhir_server.supervision.names import Option, name_of, names, options

MONTH = re.compile(r"(\d{4})-(\d{2})")
ORGANIZATION = re.compile(r"Organization/[A-Za-z0-9\-.]{1,64}")
DEFAULT_MONTHS = 12
MAX_MONTHS = 36  # three years of months: a chart still legible in an EHR's iframe
BETTER = {"increase": "Higher is better.", "decrease": "Lower is better."}
POPULATIONS = {
    "initial-population": "Initial population",
    "denominator": "Denominator",
    "denominator-exclusion": "Excluded from the denominator",
    "numerator": "Numerator",
    "measure-population": "Measure population",
    "measure-observation": "Measure observation",
}


class BadChoice(ValueError):
    """The form's period or scope cannot be used: the message says why."""


@dataclass(frozen=True)
class Choice:
    start: str  # first month, "2026-01"
    end: str  # last month, "2026-12"
    scope: str | None  # Organization/x, or None: everything the user supervises

    @property
    def query(self) -> dict[str, str]:
        return {"from": self.start, "to": self.end, "scope": self.scope or ""}


def _month(value: str, what: str) -> tuple[int, int]:
    found = MONTH.fullmatch(value)
    if found is None or not 1 <= int(found.group(2)) <= 12 or not 2000 <= int(found.group(1)) <= 2999:
        raise BadChoice(f"The {what} month must be a month like 2026-03.")
    return int(found.group(1)), int(found.group(2))


def _shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def choice_from(params: Mapping[str, str], today: date) -> Choice:
    """The form's ``from``, ``to`` (months) and ``scope``; defaults for what it leaves out."""
    end = params.get("to") or f"{today.year:04d}-{today.month:02d}"
    end_year, end_month = _month(end, "last")
    default_start = "{:04d}-{:02d}".format(*_shift(end_year, end_month, 1 - DEFAULT_MONTHS))
    start = params.get("from") or default_start
    start_year, start_month = _month(start, "first")
    span = (end_year * 12 + end_month) - (start_year * 12 + start_month) + 1
    if span < 1:
        raise BadChoice("The first month must not be after the last.")
    if span > MAX_MONTHS:
        raise BadChoice(f"Choose at most {MAX_MONTHS} months.")
    scope = params.get("scope") or None
    if scope is not None and not ORGANIZATION.fullmatch(scope):
        raise BadChoice("Choose one of the listed organisations.")
    return Choice(start, end, scope)


def months_of(choice: Choice) -> list[str]:
    year, month = _month(choice.start, "first")
    found = []
    while f"{year:04d}-{month:02d}" <= choice.end:
        found.append(f"{year:04d}-{month:02d}")
        year, month = _shift(year, month, 1)
    return found


def window_of(choice: Choice, now: datetime, dropout_days: int) -> Window:
    """From the first month's first day to the end of the last month, or to now when that is sooner: a period
    ending in the future would call every client seen lately an early dropout."""
    start = datetime(*_month(choice.start, "first"), 1)
    end = min(datetime(*_shift(*_month(choice.end, "last"), 1), 1), now.replace(tzinfo=None))
    if end <= start:
        raise BadChoice("The period has not started yet.")
    return Window(start, end, dropout_days)


@dataclass
class GroupView:
    key: str  # unique on the page, for element ids ("srs-completion-srs-completion")
    code: str  # the Measure group's code (fit-indicators)
    title: str
    style: Style
    overall: Cell
    months: dict[str, Cell]  # by month, only months with members
    chart: str
    programs: dict[str, Cell]
    clinicians: dict[str, Cell]


@dataclass
class IndicatorView:
    id: str
    title: str
    description: str
    purpose: str
    better: str
    groups: list[GroupView]
    # (group title, group description, [(population, description)]) for "What this counts"
    definitions: list[tuple[str, str, list[tuple[str, str]]]]


@dataclass
class SupervisionPage:
    choice: Choice
    period: tuple[str, str]  # the first day and the day after the last one counted
    months: list[str]
    minimum: int
    options: list[Option]
    scope_name: str
    viewer: str = ""  # who is signed in, by name
    indicators: list[IndicatorView] = field(default_factory=list)
    programs: list[tuple[str, str]] = field(default_factory=list)  # (reference, name), the side-by-side columns
    clinicians: list[tuple[str, str]] = field(default_factory=list)
    show_clinicians: bool = False

    @property
    def period_label(self) -> str:
        first, last = month_label(self.months[0]), month_label(self.months[-1])
        return first if first == last else f"{first} to {last}"

    @property
    def up_to_now(self) -> bool:
        """The period ends now, before its last month does."""
        return self.period[1][:7] == self.months[-1]


def build_page(
    fhir: GuardedInteractions, choice: Choice, *, now: datetime, minimum: int, dropout_days: int, request_url: str
) -> SupervisionPage:
    """The page for ``choice``, as ``fhir``'s caller may see it; a ``FhirError`` (403) when they may not."""
    engine = fhir.repo.engine
    try:
        allowed = reachable(fhir.policy, engine)
        scope = scope_for(fhir.policy, engine, choice.scope)
    except FhirError as refused:
        fhir.audit.record(
            fhir.caller,
            Access("operation", OUTCOME_MINOR_FAILURE, f"supervision page refused: {refused}"[:300],
                   query=request_url, client_address=fhir.client_address),
        )  # fmt: skip
        raise
    window = window_of(choice, now, dropout_days)
    period = (window.start.date().isoformat(), window.end.date().isoformat())
    request = make_request(fhir.library, window, period, scope, choice.scope, "summary")
    indicators = list(fhir.library.indicators)
    with report_connections(fhir.repo.read_engine, fhir.settings.report_connections) as connections:
        reports = list(zip(indicators, evaluate(connections, indicators, request), strict=True))
    fhir.record_operation(
        "evaluate-measure",
        f"supervision page: $evaluate-measure {', '.join(i.id for i in indicators)} {period[0]}..{period[1]} "
        f"for {choice.scope or 'every organisation supervised'}",
        request_url,
    )
    chosen = options(fhir.repo, sorted(allowed)) if allowed is not None else []
    page = SupervisionPage(
        choice,
        period,
        months_of(choice),
        minimum,
        chosen,
        scope_name=next((o.name for o in chosen if o.reference == choice.scope), choice.scope or "")
        or "Everything you supervise",
        show_clinicians=choice.scope is not None or len(chosen) == 1,
        viewer=name_of(fhir.repo, fhir.caller.fhir_user) if fhir.caller.fhir_user else "",
    )
    page.indicators = [_indicator(indicator, report, page) for indicator, report in reports]
    for stratifier, attribute in (("program", "programs"), ("clinician", "clinicians")):
        references = {r for i in page.indicators for g in i.groups for r in getattr(g, attribute)}
        named = names(fhir.repo, references, stratifier)
        ordered = sorted(named.items(), key=lambda item: (item[0] == "unknown", item[1].lower(), item[0]))
        setattr(page, attribute, ordered)
    return page


def _indicator(indicator: Indicator, report: dict[str, Any], page: SupervisionPage) -> IndicatorView:
    measure = indicator.measure
    groups, definitions = [], []
    single = len(measure["group"]) == 1
    for counted, declared, found in zip(indicator.definition.groups, measure["group"], report["group"], strict=True):
        coding = declared["code"]["coding"][0]
        title = measure.get("title", indicator.id) if single else coding.get("display") or coding["code"]
        groups.append(_group(indicator.id, counted.code, title, counted.count.rule, counted.scoring, found, page))
        populations = [
            (POPULATIONS.get(p["code"]["coding"][0]["code"], p["code"]["coding"][0]["code"]), p.get("description", ""))
            for p in declared.get("population", [])
        ]
        definitions.append((title, declared.get("description", ""), populations))
    notation = (measure.get("improvementNotation") or {}).get("coding", [{}])[0].get("code")
    return IndicatorView(
        indicator.id,
        measure.get("title", indicator.id),
        measure.get("description", ""),
        measure.get("purpose", ""),
        BETTER.get(notation or "", ""),
        groups,
        definitions,
    )


def _group(
    indicator: str, code: str, title: str, rule: str, scoring: str, found: dict[str, Any], page: SupervisionPage
) -> GroupView:
    key, proportion = f"{indicator}-{code}", scoring == "proportion"

    def cells(stratifier: str) -> dict[str, Cell]:
        strata = next((s for s in found.get("stratifier", []) if s["code"][0]["coding"][0]["code"] == stratifier), {})
        return complement({
            s["value"]["text"]: read_cell(s["value"]["text"], s, proportion=proportion, minimum=page.minimum)
            for s in strata.get("stratum", [])
        })  # fmt: skip

    overall = read_cell("", found, proportion=proportion, minimum=page.minimum)
    months, programs, clinicians = cells("month"), cells("program"), cells("clinician")
    style = style_for(rule, scoring, [overall, *months.values(), *programs.values(), *clinicians.values()])
    chart = month_chart(key, title, page.months, months, style, page.minimum)
    shown = clinicians if page.show_clinicians else {}
    return GroupView(key, code, title, style, overall, months, chart, programs, shown)

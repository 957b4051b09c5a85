"""Indicators evaluated for a period and a scope: one SQL statement per population over the reporting index
(store/report_counts.py: the members of a population counted overall and per stratum, for every group counting
it), each indicator turned into an R4 ``MeasureReport``.

Per group and per stratum the report carries the population counts, the measure score (a proportion, or the mean
of a continuous variable, with its unit), and two extensions of ours: the number of distinct clients the cell
counts (small cells are suppressed by who shows them, the supervision page) and a 95 % interval of the score
(Wilson for a proportion, normal for a mean), so every consumer shows the same honest uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from queue import SimpleQueue
from typing import Any, TypeVar

from fhir_server.canonical import BASE
from fhir_server.fhirjson import FhirDecimal
from fhir_server.reporting.definitions import STRATIFIERS, Group
from fhir_server.reporting.indicators import Indicator
from fhir_server.reporting.intervals import mean_interval, wilson
from fhir_server.reporting.scope import Scope, Window
from fhir_server.store.report_counts import ALL, Cell, count_groups
from fhir_server.store.report_units import population

POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
CLIENTS = f"{BASE}/StructureDefinition/measurereport-clients"
INTERVAL = f"{BASE}/StructureDefinition/measurereport-interval"
# R4's MeasureReport.subject cannot name an Organization; R5's can: the cross-version extension carries it.
T, R = TypeVar("T"), TypeVar("R")
R5_SUBJECT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-MeasureReport.subject"


@dataclass(frozen=True)
class Request:
    window: Window
    period: tuple[str, str]  # as asked (periodStart, periodEnd)
    scope: Scope
    subject: str | None  # Organization/x or Practitioner/x
    report_type: str  # summary | subject-list
    instruments: dict[str, str]  # fit-measures code → the instrument's abbreviation (the instrument stratum)
    repeated: frozenset[str] = frozenset()  # codes written in several Observations of one response (Library)


def make_request(
    library: Any, window: Window, period: tuple[str, str], scope: Scope, subject: str | None, report_type: str
) -> Request:
    """A request with what the library says about its codes (the instrument of each, which ones repeat)."""
    return Request(window, period, scope, subject, report_type, library.scored_codes(), library.repeated_codes())


def evaluate(connections: Sequence[Any], indicators: Sequence[Indicator], request: Request) -> list[dict[str, Any]]:
    """One MeasureReport per indicator.  Groups of any of them that count the same population (the SRS ratings of
    the period: below the cutoff, at the ceiling, their mean) are counted together, in one statement; the
    statements run side by side on ``connections`` (store/report_connections.py: one snapshot)."""
    families: dict[Hashable, list[tuple[int, int]]] = {}
    for i, indicator in enumerate(indicators):
        for j, group in enumerate(indicator.definition.groups):
            families.setdefault(population(group.count, request.repeated), []).append((i, j))

    def count(connection: Any, places: list[tuple[int, int]]) -> list[tuple[list[Cell], dict[str, list[str]]]]:
        wanted = {name for i, _ in places for name in indicators[i].definition.stratifiers}
        return count_groups(
            connection,
            [indicators[i].definition.groups[j] for i, j in places],
            request.window,
            request.scope,
            tuple(name for name in STRATIFIERS if name in wanted),
            repeated=request.repeated,
            subjects=request.report_type == "subject-list",
        )

    counted: dict[tuple[int, int], tuple[list[Cell], dict[str, list[str]]]] = {}
    populations = list(families.values())
    for places, results in zip(populations, _side_by_side(connections, count, populations), strict=True):
        counted.update(zip(places, results, strict=True))
    return [_report(indicator, request, i, counted) for i, indicator in enumerate(indicators)]


def _side_by_side(connections: Sequence[Any], work: Callable[[Any, T], R], items: list[T]) -> list[R]:
    """``work(connection, item)`` for every item, in order, each on whichever connection is free."""
    if len(connections) == 1 or len(items) == 1:
        return [work(connections[0], item) for item in items]
    idle: SimpleQueue[Any] = SimpleQueue()
    for connection in connections:
        idle.put(connection)

    def one(item: T) -> R:
        connection = idle.get()
        try:
            return work(connection, item)
        finally:
            idle.put(connection)

    with ThreadPoolExecutor(max_workers=len(connections), thread_name_prefix="report") as pool:
        return list(pool.map(one, items))


def _report(
    indicator: Indicator,
    request: Request,
    index: int,
    counted: dict[tuple[int, int], tuple[list[Cell], dict[str, list[str]]]],
) -> dict[str, Any]:
    groups = []
    pairs = zip(indicator.definition.groups, indicator.measure["group"], strict=True)
    for j, (group, measure_group) in enumerate(pairs):
        rows, subjects = counted[(index, j)]
        groups.append(_group(group, measure_group, rows, request, subjects))
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": request.report_type,
        "measure": f"{indicator.url}|{indicator.version}",
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "period": {"start": request.period[0], "end": request.period[1]},
        "group": groups,
    }
    if request.subject and request.subject.startswith("Organization/"):
        report["extension"] = [{"url": R5_SUBJECT, "valueReference": {"reference": request.subject}}]
    elif request.subject:
        report["subject"] = {"reference": request.subject}
    if "improvementNotation" in indicator.measure:
        report["improvementNotation"] = indicator.measure["improvementNotation"]
    if any(g.get("contained") for g in groups):
        report["contained"] = [item for g in groups for item in g.pop("contained", [])]
    return report


def _group(
    group: Group,
    measure_group: dict[str, Any],
    cells: list[Cell],
    request: Request,
    subjects: dict[str, list[str]],
) -> dict[str, Any]:
    overall = next((c for c in cells if c.stratifier == ALL), None) or Cell(ALL, ALL, 0, 0, 0, 0, 0, None, None, 0)
    found: dict[str, Any] = {"code": measure_group["code"], **_scored(group, overall)}
    if subjects:
        found["contained"] = []
        for population in found["population"]:
            code = population["code"]["coding"][0]["code"]
            if code in subjects:
                list_id = f"{group.code}-{code}"
                found["contained"].append(
                    {
                        "resourceType": "List",
                        "id": list_id,
                        "status": "current",
                        "mode": "snapshot",
                        "entry": [{"item": {"reference": f"Patient/{s}"}} for s in subjects[code]],
                    }
                )
                population["subjectResults"] = {"reference": f"#{list_id}"}
    stratifiers = []
    for stratifier in measure_group.get("stratifier", ()):
        name = stratifier["code"]["coding"][0]["code"]
        strata = sorted((c for c in cells if c.stratifier == name), key=lambda c: c.stratum)
        stratifiers.append(
            {
                "code": [stratifier["code"]],
                "stratum": [{"value": {"text": _label(name, c.stratum, request)}, **_scored(group, c)} for c in strata],
            }
        )
    if stratifiers:
        found["stratifier"] = stratifiers
    return found


def _label(stratifier: str, stratum: str, request: Request) -> str:
    return request.instruments.get(stratum, stratum) if stratifier == "instrument" else stratum


def _scored(group: Group, cell: Cell) -> dict[str, Any]:
    counts = {
        "initial-population": cell.members,
        "denominator": cell.denominator,
        "denominator-exclusion": cell.exclusions,
        "numerator": cell.numerator,
        "measure-population": cell.members,
        "measure-observation": cell.observed,
    }
    found: dict[str, Any] = {
        "extension": [{"url": CLIENTS, "valueInteger": cell.clients}],
        "population": [
            {"code": {"coding": [{"system": POPULATION, "code": code}]}, "count": counts[code]}
            for code in group.populations
        ],
    }
    if group.scoring == "proportion":
        denominator = cell.denominator - cell.exclusions
        if denominator > 0:
            found["measureScore"] = {"value": _decimal(cell.numerator / denominator, 4)}
            low, high = wilson(cell.numerator, denominator)
            found["extension"].append(_interval(low, high, None))
    elif cell.observed and cell.total is not None:
        mean = cell.total / cell.observed
        unit = group.unit or "{score}"
        found["measureScore"] = {
            "value": _decimal(mean, 2),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
        interval = mean_interval(cell.observed, cell.total, cell.squares or 0.0)
        if interval:
            found["extension"].append(_interval(*interval, unit))
    return found


def _interval(low: float, high: float, unit: str | None) -> dict[str, Any]:
    def bound(value: float) -> dict[str, Any]:
        quantity: dict[str, Any] = {"value": _decimal(value, 4 if unit is None else 2)}
        if unit:
            quantity.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
        return quantity

    return {"url": INTERVAL, "valueRange": {"low": bound(low), "high": bound(high)}}


def _decimal(value: float, places: int) -> FhirDecimal:
    return FhirDecimal(f"{value:.{places}f}")

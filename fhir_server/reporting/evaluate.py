"""An indicator evaluated for a period and a scope: one SQL statement per group over the reporting index (the
members of its population, reporting/units.py, counted overall and per stratum in one ``UNION ALL``), turned into
an R4 ``MeasureReport``.

Per group and per stratum the report carries the population counts, the measure score (a proportion, or the mean
of a continuous variable, with its unit), and two extensions of ours: the number of distinct clients the cell
counts (small cells are suppressed by who shows them, the supervision page) and a 95 % interval of the score
(Wilson for a proportion, normal for a mean), so every consumer shows the same honest uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, case, extract, func, literal, select, union_all

from fhir_server.canonical import BASE
from fhir_server.fhirjson import FhirDecimal
from fhir_server.reporting.definitions import Group
from fhir_server.reporting.indicators import Indicator
from fhir_server.reporting.intervals import mean_interval, wilson
from fhir_server.reporting.units import Scope, Window, members
from fhir_server.store.tables import idx_date

POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
CLIENTS = f"{BASE}/StructureDefinition/measurereport-clients"
INTERVAL = f"{BASE}/StructureDefinition/measurereport-interval"
# R4's MeasureReport.subject cannot name an Organization; R5's can: the cross-version extension carries it.
R5_SUBJECT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-MeasureReport.subject"
AGE_BANDS = (
    (0, 5, "under 6"),
    (6, 12, "6-12"),
    (13, 17, "13-17"),
    (18, 25, "18-25"),
    (26, 64, "26-64"),
    (65, 200, "65 and over"),
)
UNKNOWN = "unknown"
ALL = ""


@dataclass(frozen=True)
class Cell:
    """One row of counts: a group overall (stratifier ``ALL``) or one stratum of one stratifier."""

    stratifier: str
    stratum: str
    members: int
    denominator: int
    exclusions: int
    numerator: int
    clients: int
    total: float | None
    squares: float | None
    observed: int


@dataclass(frozen=True)
class Request:
    window: Window
    period: tuple[str, str]  # as asked (periodStart, periodEnd)
    scope: Scope
    subject: str | None  # Organization/x or Practitioner/x
    report_type: str  # summary | subject-list
    instruments: dict[str, str]  # fit-measures code → the instrument's abbreviation (the instrument stratum)


def evaluate(connection: Any, indicator: Indicator, request: Request) -> dict[str, Any]:
    groups = []
    for group, measure_group in zip(indicator.definition.groups, indicator.measure["group"], strict=True):
        units = members(group.count, request.window, request.scope).cte(f"units_{group.code.replace('-', '_')}")
        rows = [Cell(*row) for row in connection.execute(_counts(units, indicator.definition.stratifiers))]
        subjects = _subjects(connection, units, group) if request.report_type == "subject-list" else {}
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


def _counts(units: Any, stratifiers: tuple[str, ...]) -> Select:
    """Overall and per stratum, in one statement (the members are selected once)."""
    arms = [_arm(units, ALL, literal(ALL), None)]
    for name in stratifiers:
        if name == "age-band":
            aged = _with_age(units)
            arms.append(_arm(aged, name, _age_band(aged.c.age), None))
        else:
            column = {
                "program": units.c.program,
                "clinician": units.c.clinician,
                "month": units.c.month,
                "instrument": units.c.code,
            }[name]
            arms.append(_arm(units, name, func.coalesce(column, UNKNOWN), None))
    return union_all(*arms)


def _arm(units: Any, stratifier: str, stratum: Any, source: Any) -> Select:
    """One stratifier's counts (``ALL``: the group's, ungrouped)."""
    value = units.c.value
    statement = select(
        literal(stratifier).label("stratifier"),
        stratum.label("stratum"),
        func.count().label("members"),
        func.coalesce(func.sum(units.c.den), 0),
        func.coalesce(func.sum(units.c.excl), 0),
        func.coalesce(func.sum(units.c.num), 0),
        func.count(units.c.subject_id.distinct()),
        func.sum(value),
        func.sum(value * value),
        func.count(value),
    ).select_from(source if source is not None else units)
    return statement if stratifier == ALL else statement.group_by(stratum)


def _with_age(units: Any) -> Any:
    """The members with the client's age in whole years on the day counted (NULL: no birth date here)."""
    born = idx_date.alias("born")
    at, low = units.c.at, born.c.low
    had_birthday = extract("month", at) * 100 + extract("day", at) >= extract("month", low) * 100 + extract("day", low)
    age = extract("year", at) - extract("year", low) - case((had_birthday, 0), else_=1)
    joined = units.outerjoin(
        born,
        and_(born.c.resource_type == "Patient", born.c.param == "birthdate", born.c.resource_id == units.c.subject_id),
    )
    return select(units, age.label("age")).select_from(joined).subquery("aged")


def _age_band(age: Any) -> Any:
    bands = [((age >= low) & (age <= high), label) for low, high, label in AGE_BANDS]
    return case(*bands, else_=UNKNOWN)


def _subjects(connection: Any, units: Any, group: Group) -> dict[str, list[str]]:
    """The clients behind each population (reportType subject-list)."""
    wanted = {
        "initial-population": None,
        "denominator": units.c.den == 1,
        "numerator": units.c.num == 1,
        "denominator-exclusion": units.c.excl == 1,
        "measure-population": None,
    }
    found = {}
    for code in group.populations:
        if code not in wanted:
            continue
        statement = select(units.c.subject_id).distinct().order_by(units.c.subject_id)
        if wanted[code] is not None:
            statement = statement.where(wanted[code])
        found[code] = [row[0] for row in connection.execute(statement)]
    return found


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

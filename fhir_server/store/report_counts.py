"""An indicator group's counts in SQL (reporting/evaluate.py turns them into a MeasureReport): the members of its
population (store/report_units.py) counted overall and per stratum in one ``UNION ALL`` statement, so the members
are selected once per group; and, for a subject-list report, the clients behind each population.

Strata: the member's program, clinician, month and instrument (its code), and its client's age band on the day
counted, from the Patient's birthDate in the search index (``unknown`` without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, Select, case, cast, func, literal, select, union_all

from fhir_server.reporting.definitions import Group
from fhir_server.reporting.scope import Scope, Window
from fhir_server.store.report_units import members, numerators
from fhir_server.store.tables import idx_date

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


def _counts(units: Any, stratifiers: tuple[str, ...], numerators: list[str], dialect: str) -> Select:
    """Overall and per stratum, in one statement.  The members are first summed per client and combination of
    strata (``fine``: a few members each), then per stratum and client, then per stratum: the clients of a stratum
    are the rows of that last step, counted without a DISTINCT (which sorts every member once per stratifier)."""
    aged = "age-band" in stratifiers
    source = _with_band(units, dialect) if aged else units
    keys = [source.c.subject_id, source.c.program, source.c.clinician, source.c.month, source.c.code]
    if aged:
        keys.append(source.c.band)
    value = source.c.value
    fine = (
        select(
            *keys,
            func.count().label("members"),
            func.sum(source.c.den).label("den"),
            func.sum(source.c.excl).label("excl"),
            func.sum(value).label("total"),
            func.sum(value * value).label("squares"),
            func.count(value).label("observed"),
            *(func.sum(source.c[name]).label(name) for name in numerators),
        )
        .group_by(*keys)
        .cte("fine")
    )
    summed = ("members", "den", "excl", "total", "squares", "observed", *numerators)
    named = {"age-band": "band", "instrument": "code"}  # the others are columns of their own name
    column = {name: fine.c[named.get(name, name)] for name in stratifiers}
    arms = []
    for name in (ALL, *stratifiers):
        stratum = literal(ALL) if name == ALL else func.coalesce(column[name], UNKNOWN)
        grouping = [fine.c.subject_id] if name == ALL else [stratum, fine.c.subject_id]
        arms.append(
            select(
                literal(name).label("stratifier"),
                stratum.label("stratum"),
                *(func.sum(fine.c[each]).label(each) for each in summed),
            ).group_by(*grouping)
        )
    per_client = union_all(*arms).subquery("per_client")

    def whole(name: str) -> Any:
        return cast(func.coalesce(func.sum(per_client.c[name]), 0), BigInteger)

    return select(
        per_client.c.stratifier,
        per_client.c.stratum,
        whole("members"),
        whole("den"),
        whole("excl"),
        func.count(),
        cast(func.sum(per_client.c.total), Float),
        cast(func.sum(per_client.c.squares), Float),
        whole("observed"),
        *(whole(name) for name in numerators),
    ).group_by(per_client.c.stratifier, per_client.c.stratum)


def _with_band(units: Any, dialect: str) -> Any:
    """The members with their client's age band on the day counted (``unknown``: no birth date here).  Ages are
    compared as dates written YYYYMMDD: a client is N years old once the day counted, less the birth date, reaches
    N * 10000 — their birthday of that year passed, as a person counts (born 29 February: from 1 March)."""

    def day(value: Any) -> Any:
        if dialect == "postgresql":  # date_part: a float, several times faster than EXTRACT's numeric
            return (
                func.date_part("year", value) * 10000
                + func.date_part("month", value) * 100
                + func.date_part("day", value)
            )
        return cast(func.strftime("%Y%m%d", value), Integer)

    dated = idx_date.alias("dated")
    born = (
        select(dated.c.resource_id, day(dated.c.low).label("born"))
        .where(dated.c.resource_type == "Patient", dated.c.param == "birthdate")
        .subquery("born")
    )
    joined = units.outerjoin(born, born.c.resource_id == units.c.subject_id)
    # OFFSET 0: a fence, so PostgreSQL computes each member's days lived once, not again in every band's test
    lived = select(units, (day(units.c.at) - born.c.born).label("lived")).select_from(joined).offset(0).subquery()
    band = case(
        *(
            ((lived.c.lived >= low * 10000) & (lived.c.lived < (high + 1) * 10000), label)
            for low, high, label in AGE_BANDS
        ),
        else_=UNKNOWN,
    )
    return select(*(c for c in lived.c if c.name != "lived"), band.label("band")).subquery("banded")


def _subjects(connection: Any, units: Any, group: Group, numerator: str) -> dict[str, list[str]]:
    """The clients behind each population (reportType subject-list)."""
    wanted = {
        "initial-population": None,
        "denominator": units.c.den == 1,
        "numerator": units.c[numerator] == 1,
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


def count_groups(
    connection: Any,
    groups: Sequence[Group],
    window: Window,
    scope: Scope,
    stratifiers: tuple[str, ...],
    *,
    repeated: frozenset[str] = frozenset(),
    subjects: bool,
) -> list[tuple[list[Cell], dict[str, list[str]]]]:
    """Groups of one population (store/report_units.py ``population``) counted in one statement: per group, its
    cells and (``subjects``) the clients of each of its populations."""
    names = numerators(len(groups))
    units = members([group.count for group in groups], window, scope, repeated).cte("units")
    rows = connection.execute(_counts(units, stratifiers, names, connection.dialect.name)).all()
    found = []
    for index, group in enumerate(groups):
        cells = [Cell(*row[:5], row[9 + index], *row[5:9]) for row in rows]
        found.append((cells, _subjects(connection, units, group, names[index]) if subjects else {}))
    return found

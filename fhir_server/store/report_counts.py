"""An indicator group's counts in SQL (reporting/evaluate.py turns them into a MeasureReport): the members of its
population (store/report_units.py) counted overall and per stratum in one ``UNION ALL`` statement, so the members
are selected once per group; and, for a subject-list report, the clients behind each population.

Strata: the member's program, clinician, month and instrument (its code), and its client's age band on the day
counted, from the Patient's birthDate in the search index (``unknown`` without one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, case, extract, func, literal, select, text, union_all

from fhir_server.reporting.definitions import Group
from fhir_server.reporting.scope import Scope, Window
from fhir_server.store.report_units import members
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
REPORT_WORK_MEM = "64MB"


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


@contextmanager
def report_connection(engine: Any) -> Iterator[Any]:
    """A connection for one report's statements.  On PostgreSQL: one read-only REPEATABLE READ transaction (every
    indicator of a report counts the same snapshot), without JIT (compiling a report's expressions took longer
    than running them: 1.3 s of a 3 s statement at 500,000 Observations, bench/reporting.py) and with room to sort
    and count distinct clients in memory instead of on disk.  The read engine's connections are autocommit, where
    SET LOCAL would be ignored: hence the transaction of our own."""
    with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            yield connection
            return
        connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with connection.begin() as transaction:
            connection.execute(text("SET LOCAL jit = off"))
            connection.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
            yield connection
            transaction.rollback()  # nothing was written; rolled back, not committed


def _counts(units: Any, stratifiers: tuple[str, ...], dialect: str) -> Select:
    """Overall and per stratum, in one statement (the members are selected once)."""
    arms = [_arm(units, ALL, literal(ALL), None)]
    for name in stratifiers:
        if name == "age-band":
            aged = _with_age(units, dialect)
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


def _with_age(units: Any, dialect: str) -> Any:
    """The members with the client's age in whole years on the day counted (NULL: no birth date here).  Computed
    once per member: OFFSET 0 keeps PostgreSQL from folding the subquery into the CASE of the bands, which then
    computed the age once per band (half of every statement's time, bench/reporting.py); and with ``date_part``
    (a float) there, as EXTRACT's numeric arithmetic is several times slower."""

    def part(field: str, value: Any) -> Any:
        return func.date_part(field, value) if dialect == "postgresql" else extract(field, value)

    born = idx_date.alias("born")
    at, low = units.c.at, born.c.low
    had_birthday = part("month", at) * 100 + part("day", at) >= part("month", low) * 100 + part("day", low)
    age = part("year", at) - part("year", low) - case((had_birthday, 0), else_=1)
    joined = units.outerjoin(
        born,
        and_(born.c.resource_type == "Patient", born.c.param == "birthdate", born.c.resource_id == units.c.subject_id),
    )
    return select(units, age.label("age")).select_from(joined).offset(0).subquery("aged")


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


def count_group(
    connection: Any,
    group: Group,
    window: Window,
    scope: Scope,
    stratifiers: tuple[str, ...],
    *,
    repeated: frozenset[str] = frozenset(),
    subjects: bool,
) -> tuple[list[Cell], dict[str, list[str]]]:
    """The group's cells, and (``subjects``) the clients of each of its populations."""
    units = members(group.count, window, scope, repeated).cte(f"units_{group.code.replace('-', '_')}")
    cells = [Cell(*row) for row in connection.execute(_counts(units, stratifiers, connection.dialect.name))]
    return cells, (_subjects(connection, units, group) if subjects else {})

"""The supervision page as CSV (``/app/supervision.csv``): one row per cell the page shows — each indicator group
overall, by month, by program and by clinician — with the same numbers, written the same way, and the same cells
suppressed (supervision/cells.py): a suppressed row says "< N" clients and nothing else.

A name that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return: an Organization's name is whatever its writer chose) is written with a leading apostrophe; numbers, ours,
are written as they are (a negative change stays a number).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from fhir_server.supervision.cells import Cell, Style
from fhir_server.supervision.charts import month_label
from fhir_server.supervision.page import SupervisionPage

COLUMNS = (
    "period_start", "period_end", "scope", "indicator", "group", "title", "breakdown", "stratum", "name",
    "value", "unit", "interval_low", "interval_high", "numerator", "n", "counted", "clients",
)  # fmt: skip
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
TEXT = ("scope", "indicator", "group", "title", "stratum", "name")  # the columns that hold names, not our own numbers


def rows(page: SupervisionPage) -> Iterator[dict[str, str]]:
    """The cells in page order, each as a dict of COLUMNS."""
    programs, clinicians = dict(page.programs), dict(page.clinicians)
    shared = {"period_start": page.period[0], "period_end": page.period[1], "scope": page.choice.scope or "all"}
    for indicator in page.indicators:
        for group in indicator.groups:
            at = {**shared, "indicator": indicator.id, "group": group.code, "title": group.title}
            yield _row(at, group.style, "overall", group.overall, "", page.minimum)
            for month in page.months:
                if month in group.months:
                    yield _row(at, group.style, "month", group.months[month], month_label(month), page.minimum)
            for breakdown, cells, named in (
                ("program", group.programs, programs),
                ("clinician", group.clinicians, clinicians),
            ):
                for reference in named:
                    if reference in cells:
                        yield _row(at, group.style, breakdown, cells[reference], named[reference], page.minimum)


def _row(at: dict[str, str], style: Style, breakdown: str, cell: Cell, name: str, minimum: int) -> dict[str, str]:
    row = {**at, "breakdown": breakdown, "stratum": cell.key, "name": name}
    if cell.suppressed:
        return {**row, "clients": f"< {minimum}"}
    return {
        **row,
        "value": style.number(cell.score),
        "unit": style.unit if cell.score is not None else "",
        "interval_low": style.number(cell.low) if cell.high is not None else "",
        "interval_high": style.number(cell.high) if cell.low is not None else "",
        "numerator": "" if cell.numerator is None else str(cell.numerator),
        "n": "" if cell.n is None else str(cell.n),
        "counted": style.members if cell.n is not None else "",
        "clients": str(cell.clients),
    }


def as_csv(page: SupervisionPage) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, restval="", lineterminator="\r\n")
    writer.writeheader()
    for row in rows(page):
        writer.writerow({k: _safe(v) if k in TEXT else v for k, v in row.items()})
    return out.getvalue()


def _safe(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA) else value

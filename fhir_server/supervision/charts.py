"""An indicator over months as a server-rendered SVG, in the clinician view's chart style (clinician/charts.py):
readable without JavaScript, announced to screen readers (``role="img"``, a title, and a description stating every
month's figure), no external resources, the same colours and type.

Each month with a value is a point with its 95 % interval as a whisker; consecutive months are joined.  A month
whose cell is suppressed shows "< N" at the foot of the chart and nothing else (its value is not in the SVG, not
even in an attribute); a month without data is left blank.  Rates are drawn on 0-100 %; means on a scale fitted to
their values and intervals.
"""

from __future__ import annotations

import calendar
import math
from html import escape

from fhir_server.clinician.charts import ALLIANCE_COLOUR, INK
from fhir_server.supervision.cells import Cell, Style

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 28, 16, 48


def month_label(month: str) -> str:
    """``2026-03`` → ``Mar 2026``."""
    year, number = month.split("-")
    return f"{calendar.month_abbr[int(number)]} {year}"


def _bounds(cells: list[Cell], style: Style) -> tuple[float, float, float]:
    """(bottom, top, tick step) of the value axis."""
    if style.proportion:
        return 0.0, 1.0, 0.25
    values = [v for c in cells for v in (c.score, c.low, c.high) if v is not None]
    if not values:
        return 0.0, 1.0, 0.25
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    raw = (high - low) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def month_chart(key: str, title: str, months: list[str], cells: dict[str, Cell], style: Style, minimum: int) -> str:
    """``cells`` by month (months without data absent); ``key`` keeps element ids unique on the page."""
    shown = [cells[m] for m in months if m in cells and not cells[m].suppressed and cells[m].score is not None]
    bottom, top, step = _bounds(shown, style)
    span = WIDTH - LEFT - RIGHT

    def x(index: int) -> float:
        return LEFT + (span / 2 if len(months) == 1 else span * index / (len(months) - 1))

    def y(value: float) -> float:
        clamped = max(bottom, min(top, value))
        return TOP + (HEIGHT - TOP - BOTTOM) * (top - clamped) / (top - bottom)

    parts = [
        f'<svg class="months" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="{key}-title {key}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-title">{escape(title)} by month</title>',
        f'<desc id="{key}-desc">{escape(_description(months, cells, style, minimum))}</desc>',
    ]
    ticks = round((top - bottom) / step)
    for i in range(ticks + 1):
        value = bottom + i * step
        label = f"{value * 100:.0f} %" if style.proportion else f"{value:g}"
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#d0d0d0" '
            f'stroke-width="1"/><text x="{LEFT - 8}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="{INK}">{escape(label)}</text>'
        )
    run: list[str] = []  # the points of the current stretch of consecutive months with a value
    for index, month in enumerate(months):
        cell = cells.get(month)
        if cell is None or cell.suppressed or cell.score is None:
            parts += _line(run)
            run = []
            if cell is not None and cell.suppressed:
                parts.append(
                    f'<g class="suppressed" data-month="{month}"><title>{month_label(month)}: fewer than {minimum} '
                    f'clients</title><text x="{x(index):.1f}" y="{HEIGHT - BOTTOM - 6}" text-anchor="middle" '
                    f'font-size="11" fill="{INK}">&lt; {minimum}</text></g>'
                )
            continue
        px, py = x(index), y(cell.score)
        run.append(f"{px:.1f},{py:.1f}")
        whisker = ""
        if cell.low is not None and cell.high is not None:
            low, high = y(cell.low), y(cell.high)
            whisker = (
                f'<path class="interval" d="M{px:.1f},{low:.1f}V{high:.1f}M{px - 5:.1f},{low:.1f}h10'
                f'M{px - 5:.1f},{high:.1f}h10" stroke="{ALLIANCE_COLOUR}" stroke-width="1.5" fill="none"/>'
            )
        parts.append(
            f'<g class="point" data-month="{month}" data-value="{cell.score:g}"><title>'
            f"{escape(_said(month, cell, style))}</title>{whisker}"
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{ALLIANCE_COLOUR}"/></g>'
        )
    parts += _line(run)
    step_labels = max(1, math.ceil(len(months) / 12))  # at most about a dozen labels: legible at 800 px
    for index, month in enumerate(months):
        if index % step_labels == 0 or index == len(months) - 1:
            name, year = month_label(month).split()
            year_line = f'<tspan x="{x(index):.1f}" dy="14">{year}</tspan>' if index == 0 or name == "Jan" else ""
            parts.append(
                f'<text x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" font-size="11" '
                f'fill="{INK}">{name}{year_line}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _line(points: list[str]) -> list[str]:
    if len(points) < 2:
        return []
    return [f'<polyline points="{" ".join(points)}" fill="none" stroke="{ALLIANCE_COLOUR}" stroke-width="2.5"/>']


def _said(month: str, cell: Cell, style: Style) -> str:
    interval = style.interval(cell)
    text = f"{month_label(month)}: {style.value(cell)}"
    text += f" (95 % interval {interval})" if interval else ""
    return f"{text}; {style.counts(cell)}"


def _description(months: list[str], cells: dict[str, Cell], style: Style, minimum: int) -> str:
    said = []
    for month in months:
        cell = cells.get(month)
        if cell is None or cell.empty:
            said.append(f"{month_label(month)}: no data.")
        elif cell.suppressed:
            said.append(f"{month_label(month)}: fewer than {minimum} clients.")
        elif cell.score is None:
            said.append(f"{month_label(month)}: nothing to score; {style.counts(cell)}.")
        else:
            said.append(_said(month, cell, style) + ".")
    return " ".join(said)

"""Server-rendered SVG charts for the clinician view: readable without JavaScript, announced to screen readers
(``role="img"`` with a title and a description that states the figures), no external resources.

The trend chart plots an alliance and an outcome total (0-40: the SRS and the ORS, or the forms for the client's
age; clinician/view.py picks them from the library and names them) by session, with the alliance cutoff, the
client's age-appropriate outcome cutoff, the reliable-change band around the intake outcome score and the flagged
sessions marked.  Sessions are spaced evenly (a chart of conversations, not of calendar time); each point carries
its date in its tooltip title.  CSS classes are named after the lines' abbreviations (``series-srs``,
``srs-cutoff``).  Beside the alliance line, the therapist's own rating of each session (``series-therapist``,
diamonds) and, where both rated a session, the gap between the two points as a dotted stroke (``gap``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from fhir_server.scoring.flags import cutoff_of
from fhir_server.scoring.rules import ScoringRules
from fhir_server.scoring.settings import ScoringSettings
from fhir_server.scoring.summary import MeasureSeries, Point

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 150, 16, 44
SCALE_MAX = Decimal(40)
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies; all ≥ 4.5:1 on white
ALLIANCE_COLOUR, OUTCOME_COLOUR, FLAG_COLOUR, INK = "#0060a0", "#8a4b00", "#b00020", "#222222"
THERAPIST_COLOUR = "#6a3d9a"  # 8.6:1; told apart from the client's line by its diamonds too, not colour alone
PROFILE_COLOURS = ("#0060a0", "#8a4b00", "#4b5d00", "#6a3d9a")


@dataclass(frozen=True)
class TrendLines:
    alliance_cutoff: Decimal | None
    outcome_cutoff: Decimal | None
    reliable_change: Decimal | None  # ± band around the intake outcome score
    # What the chart calls its two lines: build_view passes the library's abbreviations; these defaults name the
    # shipped measures for a chart drawn without the library.
    alliance: str = "SRS"
    outcome: str = "ORS"


@dataclass(frozen=True)
class SessionPair:
    """One session both rated: the client's total, the therapist's, and the gap (therapist - client)."""

    date: str  # the session's: when the client rated it
    client: Decimal
    therapist: Decimal
    gap: Decimal


@dataclass(frozen=True)
class TherapistLine:
    """The therapist's rating of each session beside the alliance line (clinician/therapist_line.py)."""

    points: list[Point]  # dated by their session (the client's rating's date where both rated it)
    pairs: list[SessionPair]  # oldest first
    name: str = "Therapist"


def _css(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span / 2 if count == 1 else span * index / (count - 1))


def _y(value: Decimal) -> float:
    clamped = max(Decimal(0), min(SCALE_MAX, value))
    return TOP + (HEIGHT - TOP - BOTTOM) * float((SCALE_MAX - clamped) / SCALE_MAX)


def trend_chart(
    srs: MeasureSeries | None, ors: MeasureSeries | None, lines: TrendLines, therapist: TherapistLine | None = None
) -> str:
    """The alliance (``srs``) and outcome (``ors``) trend as an SVG document fragment, with the therapist's line
    when there is one."""
    theirs = therapist.points if therapist else []
    dates = sorted(
        {p.date[:10] for series in (srs, ors) if series for p in series.points} | {p.date[:10] for p in theirs}
    )
    position = {d: i for i, d in enumerate(dates)}
    alliance, outcome = lines.alliance, lines.outcome
    title = f"{escape(alliance)} and {escape(outcome)} totals by session (0 to 40)"
    if theirs:
        title = f"{escape(alliance)}, the therapist's rating and {escape(outcome)} totals by session (0 to 40)"
    parts = [
        f'<svg class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        'aria-labelledby="trend-title trend-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="trend-title">{title}</title>',
        f'<desc id="trend-desc">{escape(_description(srs, ors, lines, therapist))}</desc>',
        *_grid(),
    ]
    if ors and ors.points and lines.reliable_change is not None:
        intake = ors.points[0].value
        top, bottom = _y(intake + lines.reliable_change), _y(intake - lines.reliable_change)
        parts.append(
            f'<rect class="reliable-band" x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}" '
            f'height="{bottom - top:.1f}" fill="{OUTCOME_COLOUR}" fill-opacity="0.10">'
            f"<title>{escape(outcome)} reliable-change band: intake {intake} ± {lines.reliable_change}</title></rect>"
        )
    cutoff = lines.alliance_cutoff
    parts += _cutoff(cutoff, f"{alliance} cutoff {cutoff}", ALLIANCE_COLOUR, f"{_css(alliance)}-cutoff")
    cutoff = lines.outcome_cutoff
    parts += _cutoff(cutoff, f"{outcome} cutoff {cutoff}", OUTCOME_COLOUR, f"{_css(outcome)}-cutoff")
    if therapist is not None:  # under the points, so each end of a gap shows whose rating it is
        parts += _gaps(therapist.pairs, position, len(dates))
    lines_drawn = ((ors, OUTCOME_COLOUR, outcome, "square"), (srs, ALLIANCE_COLOUR, alliance, "circle"))
    for series, colour, name, shape in lines_drawn:
        if series and series.points:
            parts += _series(series.points, position, len(dates), colour, name, shape)
    if theirs:
        parts += _series(theirs, position, len(dates), THERAPIST_COLOUR, therapist.name, "diamond")
    parts += _date_labels(dates)
    parts.append("</svg>")
    return "".join(parts)


def _grid() -> list[str]:
    out = []
    for value in range(0, 41, 10):
        y = _y(Decimal(value))
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d0d0" stroke-width="1"/>'
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="{INK}">{value}</text>'
        )
    return out


def _cutoff(value: Decimal | None, label: str, colour: str, css: str) -> list[str]:
    if value is None:
        return []
    y = _y(value)
    return [
        f'<g class="{css}"><line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
        f'stroke-width="2" stroke-dasharray="6 4"/><text x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}" font-size="12" '
        f'fill="{colour}">{escape(label)}</text></g>'
    ]


def _series(points: list[Point], position: dict[str, int], count: int, colour: str, name: str, shape: str) -> list:
    coords = [(_x(position[p.date[:10]], count), _y(p.value), p) for p in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
    out = [f'<g class="series series-{_css(name)}">']
    out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
    for x, y, point in coords:
        label = f"{name} {point.value} on {point.date[:10]}" + (", flagged" if point.flagged else "")
        if shape == "circle":
            mark = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
        elif shape == "diamond":
            mark = f'<path d="M{x:.1f} {y - 6:.1f}l6 6-6 6-6-6z" fill="{colour}"/>'
        else:
            mark = f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}"/>'
        flag = (
            f'<circle class="flag-marker" cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="{FLAG_COLOUR}" '
            'stroke-width="2.5"/>'
            if point.flagged
            else ""
        )
        out.append(
            f'<g class="point" data-date="{escape(point.date[:10])}" data-value="{point.value}" '
            f'data-flagged="{str(point.flagged).lower()}"><title>{escape(label)}</title>{mark}{flag}</g>'
        )
    out.append("</g>")
    return out


def _gaps(pairs: list[SessionPair], position: dict[str, int], count: int) -> list[str]:
    """Each session both rated: a dotted stroke from the client's point to the therapist's, its length the gap."""
    out = []
    for pair in pairs:
        day = pair.date[:10]
        if day not in position:
            continue
        x = _x(position[day], count)
        said = f"Gap on {day}: therapist {pair.therapist} - client {pair.client} = {pair.gap:+}"
        out.append(
            f'<g class="gap" data-date="{escape(day)}" data-gap="{pair.gap:+}"><title>{escape(said)}</title>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_y(pair.client):.1f}" y2="{_y(pair.therapist):.1f}" '
            f'stroke="{THERAPIST_COLOUR}" stroke-width="2" stroke-dasharray="2 3"/></g>'
        )
    return out


def _date_labels(dates: list[str]) -> list[str]:
    if not dates:
        return [
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="14" fill="{INK}">'
            "No scored sessions yet</text>"
        ]
    step = max(1, len(dates) // 8)  # at most ~8 labels, so they stay legible at 800 px
    return [
        f'<text x="{_x(i, len(dates)):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" font-size="11" '
        f'fill="{INK}">{escape(d[5:])}</text>'
        for i, d in enumerate(dates)
        if i % step == 0 or i == len(dates) - 1
    ]


def _description(
    srs: MeasureSeries | None, ors: MeasureSeries | None, lines: TrendLines, therapist: TherapistLine | None = None
) -> str:
    sentences = []
    for name, series, cutoff in (
        (lines.alliance, srs, lines.alliance_cutoff),
        (lines.outcome, ors, lines.outcome_cutoff),
    ):
        if not series or not series.points:
            sentences.append(f"No {name} sessions.")
            continue
        latest = series.points[-1]
        flagged = sum(1 for p in series.points if p.flagged)
        text = f"{name}: {len(series.points)} sessions, latest {latest.value} on {latest.date[:10]}, {series.trend}"
        if cutoff is not None:
            text += f"; cutoff {cutoff}"
        if flagged:
            text += f"; {flagged} flagged"
        sentences.append(text + ".")
    if therapist is not None and therapist.points:
        latest = therapist.points[-1]
        text = f"The therapist's rating: {len(therapist.points)} sessions, latest {latest.value} on {latest.date[:10]}"
        if therapist.pairs:
            gap = therapist.pairs[-1]
            text += f"; latest gap (therapist minus client) {gap.gap:+} on {gap.date[:10]}"
        sentences.append(text + ".")
    return " ".join(sentences)


def profile_chart(
    subscores: dict[str, list[tuple[str, Decimal]]],
    labels: dict[str, str],
    title: str = "Subscale means by administration",
    top: Decimal = Decimal(5),
    key: str = "profile",
) -> str:
    """Subscale means (the WAI-SR's Bond, Goal and Task, 1-5) over administrations, as grouped bars; one bar per
    code of ``subscores``, in its order, ``top`` at full height; ``key`` keeps element ids unique on the page."""
    codes = [c for c in subscores if subscores[c]]
    dates = sorted({d[:10] for c in codes for d, _ in subscores[c]})
    if not codes or not dates:
        return ""
    height, bar, gap = 200, 14, 28
    width = LEFT + len(dates) * (len(codes) * bar + gap) + 20
    colours = {c: PROFILE_COLOURS[n % len(PROFILE_COLOURS)] for n, c in enumerate(codes)}
    described = "; ".join(f"{labels.get(c, c)} latest {subscores[c][-1][1]}" for c in codes)
    out = [
        f'<svg class="profile" viewBox="0 0 {width} {height + 40}" width="100%" role="img" '
        f'aria-labelledby="{key}-title {key}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-title">{escape(title)}</title>',
        f'<desc id="{key}-desc">{escape(described)}</desc>',
    ]
    for d_index, day in enumerate(dates):
        for c_index, code in enumerate(codes):
            value = dict((d[:10], v) for d, v in subscores[code]).get(day)
            if value is None:
                continue
            h = float(value / top) * height
            x = LEFT + d_index * (len(codes) * bar + gap) + c_index * bar
            out.append(
                f'<rect x="{x}" y="{height - h + 10:.1f}" width="{bar - 2}" height="{h:.1f}" fill="{colours[code]}">'
                f"<title>{escape(labels.get(code, code))} {value} on {day}</title></rect>"
            )
        x_label = LEFT + d_index * (len(codes) * bar + gap) + len(codes) * bar / 2
        out.append(f'<text x="{x_label:.1f}" y="{height + 28}" text-anchor="middle" font-size="11">{day[5:]}</text>')
    out.append("</svg>")
    return "".join(out)


def total_cutoff(rules: ScoringRules | None, settings: ScoringSettings, band: str) -> Decimal | None:
    """The instrument's cutoff for the total, as scoring applies it (its setting, site overrides, age band)."""
    if rules is None:
        return None
    found = cutoff_of(rules, "total", band, settings)
    return found[1] if found else None


def reliable_change(rules: ScoringRules | None, settings: ScoringSettings, band: str) -> Decimal | None:
    if rules is None:
        return None
    for interpretation in rules.interpretations:
        if interpretation.kind == "reliable-change" and interpretation.score == "total":
            return settings.threshold(rules, interpretation.setting, band)
    return None

"""The therapist's own concordance page (issue 21): how the signed-in clinician's ratings of their sessions compare with
their clients' ratings of the same sessions, month by month over the last year, across all their clients.

Only their own gaps: the gap Observations (scoring/concordance.py) whose performer is the clinician — the author of
the therapist's rating the gap was made from — read with one search by ``performer``; nobody else's, and no client
named.  Per month (the session's month): how many sessions both rated, the mean gap (therapist - client) and how
many of those gaps raised the therapist-overestimated Flag.  A Flag counts while it is open or was acknowledged; one
ended because the pair was re-stated under the margins (an amended rating) no longer does, nor one entered in error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from html import escape
from typing import Any

from fhir_server import fhirjson
from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.clinician.blind import pairings
from fhir_server.clinician.charts import INK, THERAPIST_COLOUR
from fhir_server.engine.interactions import Interactions
from fhir_server.scoring.concordance import margins
from fhir_server.scoring.resources import ACKNOWLEDGED, derived_id
from fhir_server.supervision.charts import month_label

MONTHS = 12
PAGE = 1000  # gaps per read
MAX_PAGES = 50  # 50,000 sessions in a year: more than any one clinician rates
FLAG_BATCH = 100  # Flag ids per read
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 240, 48, 16, 16, 40
ONE_PLACE = Decimal("0.1")


@dataclass(frozen=True)
class Month:
    month: str  # YYYY-MM
    sessions: int  # sessions both the clinician and their client rated
    total: Decimal  # the sum of their gaps
    over: int  # of them, how many raised the therapist-overestimated Flag

    @property
    def mean(self) -> Decimal | None:
        return (self.total / self.sessions).quantize(ONE_PLACE, ROUND_HALF_UP) if self.sessions else None

    @property
    def share(self) -> int | None:
        """Percent of the month's sessions whose gap raised the Flag."""
        return round(100 * self.over / self.sessions) if self.sessions else None


@dataclass(frozen=True)
class ConcordancePage:
    months: list[Month]  # every month of the period, oldest first (months without a pair too)
    overall: Month  # the whole period
    total_margin: Decimal
    domain_margin: Decimal
    flag_display: str  # the Flag's name, as the clinician view shows it
    chart: str  # inline SVG, empty when no session was paired


def build_page(fhir: Interactions, practitioner: str, today: date) -> ConcordancePage:
    """The page of ``practitioner`` (``Practitioner/x``: the signed-in user's fhirUser) over the ``MONTHS`` months
    ending with ``today``'s."""
    months = _months(today)
    sessions = {m: [0, Decimal(0), 0] for m in months}
    found = pairings(fhir)
    settings = fhir.scoring.settings
    total_margin, domain_margin = margins(found[0].rules, settings) if found else (Decimal(0), Decimal(0))
    for pairing in found:
        gaps = [g for g in _gaps(fhir, practitioner, pairing.spec.total.code, months[0]) if _month(g) in sessions]
        over = _raised(fhir, [derived_id(g["id"], pairing.spec.flag.id) for g in gaps])
        for gap in gaps:
            counts = sessions[_month(gap)]
            counts[0] += 1
            counts[1] += Decimal(str(gap["valueQuantity"]["value"]))
            counts[2] += derived_id(gap["id"], pairing.spec.flag.id) in over
    listed = [Month(m, n, total, over) for m, (n, total, over) in sessions.items()]
    overall = Month(
        f"{months[0]} to {months[-1]}",
        sum(m.sessions for m in listed),
        sum((m.total for m in listed), Decimal(0)),
        sum(m.over for m in listed),
    )
    display = (found[0].spec.flag.display or found[0].spec.flag.code) if found else ""
    return ConcordancePage(
        listed, overall, total_margin, domain_margin, display, month_chart(listed) if overall.sessions else ""
    )


def _months(today: date) -> list[str]:
    year, month = today.year, today.month
    out = []
    for _ in range(MONTHS):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def _month(gap: dict[str, Any]) -> str:
    return str(gap.get("effectiveDateTime", ""))[:7]


def _gaps(fhir: Interactions, practitioner: str, code: str, first_month: str) -> Iterator[dict[str, Any]]:
    """The current gaps of ``code`` the practitioner performed, from ``first_month`` on, page by page."""
    params = [
        ("code", f"{MEASURES_CODESYSTEM}|{code}"),
        ("performer", practitioner),
        ("status", "final,amended"),
        ("date", f"ge{first_month}-01"),
        ("_count", str(PAGE)),
    ]
    cursor = None
    for _ in range(MAX_PAGES):
        query = fhir.parse_query("Observation", params + ([("_cursor", cursor)] if cursor else []))
        outcome = fhir.search(query).outcome
        for stored in outcome.matches:
            yield fhirjson.loads_stored(stored.content or "{}")
        cursor = outcome.next_cursor
        if not cursor:
            return


def _raised(fhir: Interactions, flag_ids: list[str]) -> set[str]:
    """Which of these gap Flags count as raised: open, or closed by the clinician's acknowledgement."""
    raised = set()
    for start in range(0, len(flag_ids), FLAG_BATCH):
        batch = flag_ids[start : start + FLAG_BATCH]
        query = fhir.parse_query("Flag", [("_id", ",".join(batch)), ("_count", str(FLAG_BATCH))])
        for stored in fhir.search(query).outcome.matches:
            flag = fhirjson.loads_stored(stored.content or "{}")
            acknowledged = any(e.get("url") == ACKNOWLEDGED for e in flag.get("extension", []))
            if flag.get("status") == "active" or (flag.get("status") == "inactive" and acknowledged):
                raised.add(stored.id)
    return raised


def month_chart(months: list[Month]) -> str:
    """The mean gap of each month as a bar up (the clinician rated higher) or down from zero; a month without a
    paired session has no bar.  Announced to screen readers with the figures (``role="img"``, title, description)."""
    means = [m.mean for m in months if m.mean is not None]
    reach = max([Decimal(2), *(abs(v) for v in means)]).to_integral_value(rounding=ROUND_CEILING)
    zero = TOP + (HEIGHT - TOP - BOTTOM) / 2
    scale = (HEIGHT - TOP - BOTTOM) / 2 / float(reach)
    slot = (WIDTH - LEFT - RIGHT) / len(months)
    described = "; ".join(
        f"{m.month}: mean {m.mean:+} over {m.sessions} session{'s' if m.sessions != 1 else ''}"
        for m in months
        if m.mean is not None
    )
    out = [
        f'<svg class="gap-months" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        'aria-labelledby="gap-title gap-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="gap-title">Your mean gap by month (your rating minus your client\'s)</title>',
        f'<desc id="gap-desc">{escape(described)}.</desc>',
    ]
    for value in (reach, Decimal(0), -reach):
        y = zero - float(value) * scale
        stroke, label = (INK, "0") if value == 0 else ("#d0d0d0", f"{value:+}")
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{stroke}" stroke-width="1"/>'
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="{INK}">{label}</text>'
        )
    for index, month in enumerate(months):
        x = LEFT + slot * index
        if month.mean is not None:
            height = abs(float(month.mean)) * scale
            top = zero - height if month.mean > 0 else zero
            out.append(
                f'<rect class="month" data-month="{month.month}" data-mean="{month.mean}" x="{x + slot * 0.2:.1f}" '
                f'y="{top:.1f}" width="{slot * 0.6:.1f}" height="{max(height, 1.0):.1f}" fill="{THERAPIST_COLOUR}">'
                f"<title>{month.month}: mean gap {month.mean:+}, {month.sessions} sessions</title></rect>"
            )
        out.append(
            f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" font-size="11" '
            f'fill="{INK}">{month_label(month.month)}</text>'
        )
    out.append("</svg>")
    return "".join(out)

"""The therapist's own concordance page (issue 21, point 4), through the API on both databases: only the gaps the
signed-in clinician performed, across all their clients, by the session's month over the last 12 months — sessions,
mean gap, how many raised the therapist-overestimated Flag (open or acknowledged; not one a re-stated pair ended,
not a rating entered in error) — and nobody else's."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from fhir_server.clinician.concordance_page import _months, build_page
from fhir_server.clinician.view import acknowledge
from fhir_server.scoring.concordance import gap_id
from fhir_server.scoring.resources import derived_id
from fhir_server.web.form_pages import templates
from tests.api.fhir import put
from tests.scoring.test_concordance import gap_flags, therapist
from tests.scoring.test_pipeline import srs, submit

SVG = "{http://www.w3.org/2000/svg}"


def _when(days: int) -> str:
    """That day at 10:00, but never in the future: before 10:00 UTC a session "today" at 10:00 would be ahead of
    the acknowledgement that closes its Flag (per-1: a period's start before its end)."""
    now = datetime.now(UTC)
    at = (now - timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)
    return min(at, now.replace(microsecond=0) - timedelta(seconds=1)).isoformat()


def _session(client, who: str, patient: str, days: int, client_marks, therapist_marks) -> tuple[dict, dict]:
    """One session of ``patient`` rated by the client and by ``who``: (the client's response, the therapist's)."""
    encounter = {"encounter": {"reference": f"Encounter/{patient}-{days}-{who[-2:]}"}}
    mine = submit(client, srs(patient, client_marks, _when(days), **encounter))
    theirs = submit(client, therapist(patient, therapist_marks, _when(days), author={"reference": who}, **encounter))
    return mine, theirs


def test_only_their_own_gaps_month_by_month(server, client, uid):
    me, colleague = f"Practitioner/{uid}-me", f"Practitioner/{uid}-colleague"
    first, second = f"{uid}-a", f"{uid}-b"  # two of my clients
    _session(client, me, first, 0, (90,) * 4, (95,) * 4)  # +2.0, no Flag
    _session(client, me, second, 0, (80,) * 4, (95,) * 4)  # +6.0, Flag (stays open)
    _session(client, me, first, 45, (90,) * 4, (80,) * 4)  # -4.0
    acknowledged = _session(client, me, second, 46, (70,) * 4, (90,) * 4)  # +8.0, Flag acknowledged: still counts
    restated, _ = _session(client, me, first, 47, (70,) * 4, (90,) * 4)  # +8.0, then amended to +0.0: no Flag
    amended = {**restated, "status": "amended", "item": srs(first, (90,) * 4, restated["authored"])["item"]}
    assert put(client, f"/QuestionnaireResponse/{restated['id']}", amended).status_code == 200
    _, void = _session(client, me, second, 48, (70,) * 4, (95,) * 4)  # entered in error: not counted at all
    assert put(client, f"/QuestionnaireResponse/{void['id']}", {**void, "status": "entered-in-error"}).is_success
    _session(client, me, first, 400, (50,) * 4, (95,) * 4)  # over a year ago
    _session(client, colleague, first, 0, (50,) * 4, (95,) * 4)  # my client, another clinician's rating: +18.0
    fhir = server.app.state.fhir
    flag = derived_id(gap_id(f"Patient/{second}", acknowledged[0]["encounter"]["reference"]), "overestimated")
    assert flag in {f["id"] for f in gap_flags(client, second) if f["status"] == "active"}
    acknowledge(fhir, second, flag, me, None, None)  # closes the client's open Flags of that kind: both counted

    page = build_page(fhir, me, datetime.now(UTC).date())
    by_month = {m.month: m for m in page.months}
    now, before = _when(0)[:7], _when(46)[:7]
    assert len(page.months) == 12 and page.months[-1].month == now
    assert (by_month[now].sessions, by_month[now].mean, by_month[now].over) == (2, Decimal("4.0"), 1)
    older = [m for m in page.months if m.month != now and m.sessions]
    assert sum(m.sessions for m in older) == 3 and sum(m.over for m in older) == 1  # -4.0, +8.0 (ack'd), +0.0
    assert sum(m.total for m in older) == Decimal("4.0")
    overall = page.overall
    assert (overall.sessions, overall.over, overall.total, overall.share) == (5, 2, Decimal("12.0"), 40)
    assert (page.total_margin, page.domain_margin) == (Decimal(4), Decimal(2))
    assert before in by_month

    theirs = build_page(fhir, colleague, datetime.now(UTC).date())
    assert theirs.overall.sessions == 1 and theirs.overall.mean == Decimal("18.0")
    nobody = build_page(fhir, f"Practitioner/{uuid.uuid4().hex}", datetime.now(UTC).date())
    assert nobody.overall.sessions == 0 and nobody.chart == ""

    svg = ET.fromstring(page.chart)
    bars = {r.get("data-month"): r.get("data-mean") for r in svg.iter(f"{SVG}rect")}
    assert bars[now] == "4.0" and len(bars) == len([m for m in page.months if m.sessions])
    html = templates.get_template("app/concordance.html").render(
        page=page, month_label=lambda m: m, back=True, version="t", request=None
    )
    assert "5 sessions rated by both you and your client" in html and "2.4 points above" in html
    assert "2 of 5 (40 %)" in html and first not in html and second not in html  # no client named


def test_the_period_is_the_twelve_months_ending_this_month():
    assert _months(date(2026, 3, 15)) == [f"2025-{m:02d}" for m in range(4, 13)] + ["2026-01", "2026-02", "2026-03"]

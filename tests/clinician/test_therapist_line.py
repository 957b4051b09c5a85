"""The therapist's line beside the client's on the clinician view (issue 21, point 4), through the API on both
databases: a point per session the therapist rated, placed at the session (the client's rating's date, even when
the therapist rated it the next day), the gap of each session both rated as a stroke and a table row, matched by the
responses the gap names; the therapist's ratings never in "Rated by someone else"; no line beside a child's CSRS."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fhir_server.clinician.charts import THERAPIST_COLOUR, TrendLines, trend_chart
from fhir_server.clinician.view import build_view
from fhir_server.web.form_pages import templates
from tests.scoring.test_concordance import therapist
from tests.scoring.test_pipeline import srs, submit

SVG = "{http://www.w3.org/2000/svg}"


def _day(days: float, hour: int = 10) -> str:
    when = (datetime.now(UTC) - timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return when.isoformat(timespec="seconds")


def _in(uid: str, name: str) -> dict:
    return {"encounter": {"reference": f"Encounter/{uid}-{name}"}}


def _three_sessions(client, uid: str) -> None:
    submit(client, srs(uid, (90, 90, 90, 90), _day(14), **_in(uid, "a")))  # 36.0
    submit(client, therapist(uid, (95, 95, 95, 95), _day(14, 11), **_in(uid, "a")))  # 38.0: +2.0
    submit(client, srs(uid, (85, 85, 85, 85), _day(7), **_in(uid, "b")))  # 34.0
    submit(client, therapist(uid, (80, 80, 80, 80), _day(6), **_in(uid, "b")))  # 32.0 the next day: -2.0
    submit(client, srs(uid, (88, 88, 88, 88), _day(3), **_in(uid, "c")))  # 35.2, not rated by the therapist


def test_the_therapists_line_and_the_gaps(server, client, uid):
    _three_sessions(client, uid)
    view = build_view(server.app.state.fhir, uid, "1980-01-01")
    line = view.therapist
    assert line is not None
    assert [(p.date, p.value) for p in line.points] == [(_day(14), Decimal("38.0")), (_day(7), Decimal("32.0"))]
    assert [(p.client, p.therapist, p.gap) for p in line.pairs] == [
        (Decimal("36.0"), Decimal("38.0"), Decimal("2.0")),
        (Decimal("34.0"), Decimal("32.0"), Decimal("-2.0")),
    ]
    assert view.others == []  # the therapist's ratings and gaps are the line, not someone else's ratings of the client
    svg = ET.fromstring(view.trend_svg)
    groups = {g.get("class"): g for g in svg.iter(f"{SVG}g")}
    points = groups["series series-therapist"].findall(f"{SVG}g")
    assert [p.get("data-value") for p in points] == ["38.0", "32.0"]
    assert groups["series series-therapist"].find(f"{SVG}polyline").get("stroke") == THERAPIST_COLOUR
    gaps = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "gap"]
    assert [g.get("data-gap") for g in gaps] == ["+2.0", "-2.0"]
    client_x = {p.get("data-date"): p for p in groups["series series-srs"].findall(f"{SVG}g")}
    for gap in gaps:  # each stroke stands at its session, from the client's point to the therapist's
        stroke = gap.find(f"{SVG}line")
        circle = client_x[gap.get("data-date")].find(f"{SVG}circle")
        assert stroke.get("x1") == stroke.get("x2") == circle.get("cx")
        assert stroke.get("y1") == circle.get("cy")
    assert "The therapist's rating: 2 sessions" in svg.find(f"{SVG}desc").text
    assert "latest gap (therapist minus client) -2.0" in svg.find(f"{SVG}desc").text
    page = templates.get_template("app/clinician.html").render(
        view=view, banner=None, csrf_token="x", version="test", request=None, rating=view.rating
    )
    assert "The therapist's rating beside the client's" in page and "<td>-2.0</td>" in page and "<td>+2.0</td>" in page
    assert "(the therapist's)" in page and "Rated by someone else" not in page


def test_no_line_without_the_therapists_ratings_or_beside_a_childs_csrs(server, client, uid):
    submit(client, srs(uid, (90, 90, 90, 90), _day(14), **_in(uid, "a")))
    view = build_view(server.app.state.fhir, uid, "1980-01-01")
    assert view.therapist is None and "series-therapist" not in view.trend_svg
    csrs = srs(uid, (90, 90, 90, 90), _day(13), **_in(uid, "b"))
    csrs["questionnaire"] = "http://fit-fhir.org/fhir/Questionnaire/csrs|1.0.2"
    for item, link_id in zip(csrs["item"], ("listening", "important", "what-we-did", "overall"), strict=True):
        item["linkId"] = link_id
    submit(client, csrs)
    submit(client, therapist(uid, (95, 95, 95, 95), _day(13), **_in(uid, "b")))
    child = build_view(server.app.state.fhir, uid, "2017-01-01")  # the CSRS is the alliance line at 9
    assert child.cutoffs.alliance == "CSRS" and child.therapist is None


def test_a_chart_without_the_therapist_is_as_before():
    chart = trend_chart(None, None, TrendLines(None, None, None))
    assert "series-therapist" not in chart and 'class="gap"' not in chart and "therapist" not in chart

"""The clinician view's SVG charts (issue 8 point 1): every session a point at its value on the 0-40 scale, the
SRS cutoff and the age-appropriate ORS cutoff as lines, flagged sessions marked, the reliable-change band around
the intake ORS, and a text description a screen reader announces."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

from fhir_server.clinician.charts import (
    TrendLines,
    _y,
    profile_chart,
    reliable_change,
    total_cutoff,
    trend_chart,
)
from fhir_server.config import Settings as ServerSettings
from fhir_server.library import discover
from fhir_server.scoring.settings import ScoringSettings
from fhir_server.scoring.summary import MeasureSeries, Point

SVG = "{http://www.w3.org/2000/svg}"


def _series(code: str, values: list[str], flagged: set[int] = frozenset()) -> MeasureSeries:
    series = MeasureSeries(code, code, "self")
    for i, value in enumerate(values):
        series.points.append(
            Point(
                f"2026-{9 + i // 28:02d}-{1 + i % 28:02d}T16:00:00Z",
                Decimal(value),
                f"Observation/{code}-{i}",
                flagged=i in flagged,
            )
        )
    return series


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_points_lines_flags_and_band():
    srs = _series(
        "srs-total",
        ["38.5", "37.0", "35.9", "36.0", "34.1", "39.2", "38.0", "36.1", "35.0", "37.7", "38.8", "39.0"],
        {2, 4, 8},
    )
    ors = _series(
        "ors-total", ["18.0", "20.5", "21.0", "24.0", "26.5", "25.0", "27.0", "29.5", "30.0", "31.0", "32.5", "33.0"]
    )
    root = _parse(trend_chart(srs, ors, TrendLines(Decimal(36), Decimal(25), Decimal(5))))
    points = root.findall(f".//{SVG}g[@class='point']")
    assert len(points) == 24
    srs_points = root.findall(f".//{SVG}g[@class='series series-srs']/{SVG}g")
    assert [p.get("data-value") for p in srs_points][:3] == ["38.5", "37.0", "35.9"]
    assert [p.get("data-flagged") for p in srs_points].count("true") == 3
    assert len(root.findall(f".//{SVG}circle[@class='flag-marker']")) == 3
    srs_line = root.find(f".//{SVG}g[@class='srs-cutoff']/{SVG}line")
    assert float(srs_line.get("y1")) == round(_y(Decimal(36)), 1)
    assert "SRS cutoff 36" in ET.tostring(root, encoding="unicode")
    ors_line = root.find(f".//{SVG}g[@class='ors-cutoff']/{SVG}line")
    assert float(ors_line.get("y1")) == round(_y(Decimal(25)), 1)
    band = root.find(f".//{SVG}rect[@class='reliable-band']")
    assert float(band.get("y")) == round(_y(Decimal("23.0")), 1)  # intake 18.0 + 5
    # a point sits at its value: 35.9 lies just below the cutoff line
    circle = srs_points[2].find(f"{SVG}circle")
    assert float(circle.get("cy")) > float(srs_line.get("y1"))


def test_screen_reader_description():
    srs = _series("srs-total", ["38.0", "34.1"], {1})
    root = _parse(trend_chart(srs, None, TrendLines(Decimal(36), None, None)))
    assert root.get("role") == "img"
    desc = root.find(f"{SVG}desc").text
    assert "SRS: 2 sessions, latest 34.1" in desc and "falling" in desc and "1 flagged" in desc
    assert "No ORS sessions." in desc
    assert root.find(f"{SVG}title").text.startswith("SRS and ORS totals")


def test_empty_chart_says_so():
    root = _parse(trend_chart(None, None, TrendLines(None, None, None)))
    assert "No scored sessions yet" in ET.tostring(root, encoding="unicode")


def test_cutoffs_come_from_the_rules_and_site_settings():
    library = discover(ServerSettings(_env_file=None).library_paths(), [])
    srs = library.rules_for("http://fit-fhir.org/fhir/Questionnaire/srs")
    ors = library.rules_for("http://fit-fhir.org/fhir/Questionnaire/ors")
    assert total_cutoff(srs, ScoringSettings(), "adult") == Decimal(36)
    assert total_cutoff(ors, ScoringSettings(), "adult") == Decimal(25)
    assert total_cutoff(ors, ScoringSettings(), "adolescent") == Decimal(28)
    assert total_cutoff(srs, ScoringSettings({"srs-cutoff.threshold": 35}, [srs]), "adult") == Decimal(35)
    assert reliable_change(ors, ScoringSettings(), "adult") == Decimal(5)
    assert reliable_change(ors, ScoringSettings({"ors-reliable-change.threshold": 6.6}, [ors]), "adult") == Decimal(
        "6.6"
    )


def test_wai_profile_bars():
    subscores = {
        "wai-sr-bond-mean": [("2026-10-01", Decimal("4.5")), ("2026-11-01", Decimal("4.0"))],
        "wai-sr-goal-mean": [("2026-10-01", Decimal("3.5")), ("2026-11-01", Decimal("3.0"))],
        "wai-sr-task-mean": [("2026-10-01", Decimal("4.0")), ("2026-11-01", Decimal("4.25"))],
    }
    root = _parse(profile_chart(subscores, {"wai-sr-bond-mean": "Bond"}))
    assert len(root.findall(f"{SVG}rect")) == 6
    assert "Bond latest 4.0" in root.find(f"{SVG}desc").text

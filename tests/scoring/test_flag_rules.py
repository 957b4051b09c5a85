"""MEASURES.md flag rules as data, evaluated on sequences of sessions: each rule raises exactly when the
instrument's authors (or the site's settings) say, at the boundaries too.  Pure functions: no server."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from fhir_server.scoring.flags import Session, Settings, evaluate_flags, interpretations
from fhir_server.scoring.rules import ScoringRules

RULES = ScoringRules.model_validate(
    {
        "instrument": "srs",
        "questionnaire": "http://example.org/Questionnaire/srs",
        "itemScores": [
            {"linkId": n, "code": f"srs-{n}", "display": n.title(), "read": "integer", "divideBy": 10}
            for n in ("relationship", "goals", "approach", "overall")
        ],
        "scores": [
            {
                "id": "total",
                "linkId": "total",
                "code": "srs-total",
                "method": "sum",
                "decimals": 1,
                "min": 0,
                "max": 40,
                "items": ["relationship", "goals", "approach", "overall"],
            },
        ],
        "flags": [
            {
                "id": "below",
                "code": "srs-below-cutoff",
                "kind": "threshold",
                "scores": ["total"],
                "comparator": "<",
                "threshold": 36,
                "severity": "high",
                "setting": "srs-cutoff",
                "message": "SRS {value} < {threshold}",
            },
            {
                "id": "drop",
                "code": "srs-drop",
                "kind": "drop",
                "scores": ["total"],
                "threshold": 1,
                "severity": "medium",
                "message": "fell {change} from {previous}",
            },
            {
                "id": "item",
                "code": "srs-item-checkin",
                "kind": "item-threshold",
                "comparator": "<",
                "threshold": 9,
                "severity": "low",
                "setting": "srs-item",
                "message": "lower: {items}",
            },
            {
                "id": "ceiling",
                "code": "srs-ceiling",
                "kind": "repeated",
                "scores": ["total"],
                "comparator": ">=",
                "threshold": 40,
                "window": 3,
                "severity": "info",
                "message": "40/40 again",
            },
            {
                "id": "decline",
                "code": "srs-sustained-decline",
                "kind": "decline",
                "scores": ["total"],
                "window": 3,
                "severity": "medium",
                "message": "declining over {sessions} sessions",
            },
            {
                "id": "deteriorate",
                "code": "ors-deterioration",
                "kind": "change-from-first",
                "scores": ["total"],
                "threshold": 5,
                "severity": "high",
                "message": "down {change} since intake {intake}",
            },
        ],
        "interpretations": [
            {"kind": "cutoff", "score": "total", "threshold": {"adult": 25, "adolescent": 28, "child": 32}},
            {"kind": "reliable-change", "score": "total", "threshold": 5, "cutoff": 25},
        ],
    }
)
ITEMS_HIGH = {n: D("9.5") for n in ("relationship", "goals", "approach", "overall")}


def raised(total, history=(), items=ITEMS_HIGH, overrides=None, band="adult"):
    sessions = [Session(f"2026-01-{20 - i:02d}", {"total": D(str(v))}) for i, v in enumerate(history)]
    flags = evaluate_flags(RULES, {"total": D(str(total))}, items, sessions, band, Settings(overrides))
    return {f.rule.id: f.message for f in flags}


@pytest.mark.parametrize(("total", "flagged"), [("35.9", True), ("36.0", False), ("36.1", False)])
def test_srs_cutoff_boundary_default_below_36(total, flagged):
    assert ("below" in raised(total)) is flagged


@pytest.mark.parametrize(("total", "flagged"), [("35.9", True), ("36.0", True), ("36.1", False)])
def test_srs_cutoff_site_setting_at_or_below_36(total, flagged):
    assert ("below" in raised(total, overrides={"srs-cutoff.comparator": "<="})) is flagged


def test_the_message_carries_the_values():
    assert raised("34.1")["below"] == "SRS 34.1 < 36"


@pytest.mark.parametrize(
    ("previous", "today", "flagged"), [("37.0", "36.0", True), ("37.0", "36.1", False), ("36.0", "38.0", False)]
)
def test_drop_of_one_point_from_the_previous_session(previous, today, flagged):
    assert ("drop" in raised(today, [previous])) is flagged


def test_drop_needs_a_previous_session():
    assert "drop" not in raised("30.0")


def test_item_check_in_names_the_items_below_nine():
    items = {**ITEMS_HIGH, "goals": D("8.9")}
    assert raised("37.9", items=items)["item"] == "lower: Goals"
    assert "item" not in raised("38.0", items={**ITEMS_HIGH, "goals": D("9.0")})
    assert "item" not in raised("38.0", items={**ITEMS_HIGH, "goals": D("8.0")}, overrides={"srs-item.threshold": 8})


def test_repeated_ceiling_needs_three_sessions_in_a_row():
    assert "ceiling" not in raised("40.0", ["40.0"])
    assert "ceiling" in raised("40.0", ["40.0", "40.0"])
    assert "ceiling" not in raised("40.0", ["39.9", "40.0"])


def test_sustained_decline_over_three_sessions():
    assert "decline" in raised("37.0", ["38.0", "39.5"])
    assert "decline" not in raised("37.0", ["38.0", "37.5"])  # not strictly declining
    assert "decline" not in raised("37.0", ["38.0"])  # only two sessions


def test_reliable_deterioration_from_intake():
    assert raised("20.0", ["24.0", "25.0"])["deteriorate"] == "down 5 since intake 25"
    assert "deteriorate" not in raised("20.1", ["24.0", "25.0"])


def test_interpretations_cutoff_by_age_band_and_reliable_change():
    def codes(total, history=(), band="adult"):
        sessions = [Session("2026-01-01", {"total": D(str(v))}) for v in history]
        return [
            (i["coding"][0]["code"], i["text"])
            for i in interpretations(RULES, "total", D(total), sessions, band, Settings())
        ]

    assert codes("26.0")[0][0] == "N"
    assert codes("26.0", band="adolescent")[0][0] == "L"  # 28 for adolescents
    assert codes("31.0", band="child")[0][0] == "L"  # 32 for children
    improved = codes("27.0", ["20.0"])
    assert ("B", "Reliable improvement since intake (+7)") in improved
    assert ("B", "Clinically significant change") in improved  # from below 25 to at/above it
    # intake already at/above the cutoff: reliable improvement, but not clinically significant change
    assert ("B", "Clinically significant change") not in codes("31.0", ["26.0"])
    assert ("W", "Reliable deterioration since intake (-5)") in codes("20.0", ["25.0"])

"""The flag rules of the measures notes (questionnaires/README.md) as the shipped data
(questionnaires/*/scoring.json), evaluated on sequences of sessions:
each rule raises exactly when the instrument's authors (or the site's settings) say, at the boundaries too, and
says so in words true to the setting it ran with.  Pure functions: no server."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from fhir_server.config import PROJECT_ROOT
from fhir_server.scoring.flags import TherapySession, evaluate_flags, interpretations
from fhir_server.scoring.rules import load_rules
from fhir_server.scoring.settings import ScoringSettings

SRS = load_rules(PROJECT_ROOT / "questionnaires/srs/scoring.json")
ORS = load_rules(PROJECT_ROOT / "questionnaires/ors/scoring.json")
WAI = load_rules(PROJECT_ROOT / "questionnaires/wai-sr/scoring.json")
ITEMS_HIGH = {n: D("9.5") for n in ("relationship", "goals", "approach", "overall")}


def settings(overrides=None):
    return ScoringSettings(overrides, [SRS, ORS, WAI])


def raised(total, history=(), items=ITEMS_HIGH, overrides=None, band="adult", rules=SRS, series="self"):
    """rule id → message; ``history`` newest first."""
    sessions = [TherapySession(f"2026-01-{20 - i:02d}", {"total": D(str(v))}) for i, v in enumerate(history)]
    flags = evaluate_flags(rules, {"total": D(str(total))}, items, sessions, band, settings(overrides), series)
    return {f.rule.id: f.message for f in flags}


@pytest.mark.parametrize(("total", "flagged"), [("35.9", True), ("36.0", False), ("36.1", False)])
def test_srs_cutoff_boundary_default_below_36(total, flagged):
    assert ("below-cutoff" in raised(total)) is flagged


@pytest.mark.parametrize(("total", "flagged"), [("35.9", True), ("36.0", True), ("36.1", False)])
def test_srs_cutoff_site_setting_at_or_below_36(total, flagged):
    assert ("below-cutoff" in raised(total, overrides={"srs-cutoff.comparator": "<="})) is flagged


def test_the_message_says_the_comparison_it_made():
    assert raised("34.1")["below-cutoff"].startswith("SRS 34.1 today, below 36.")
    said = raised("36.0", overrides={"srs-cutoff.comparator": "<="})["below-cutoff"]
    assert said.startswith("SRS 36 today, at or below 36.")


@pytest.mark.parametrize(
    ("previous", "today", "flagged"), [("37.0", "36.0", True), ("37.0", "36.1", False), ("36.0", "38.0", False)]
)
def test_drop_of_one_point_from_the_previous_session(previous, today, flagged):
    assert ("drop" in raised(today, [previous])) is flagged


def test_drop_needs_a_previous_session():
    assert "drop" not in raised("30.0")


def test_item_check_in_names_the_items_in_the_instruments_labels():
    items = {**ITEMS_HIGH, "goals": D("8.9"), "overall": D("8.5")}
    said = raised("37.9", items=items)["item-checkin"]
    assert said.startswith("Lower today: Goals and Topics 8.9 and Overall 8.5.")
    assert "anything about working on what you wanted to work on or today's session as a whole" in said
    assert "SRS Overall" not in said and "goals" not in said.split("Check in")[0]
    assert "item-checkin" not in raised("38.0", items={**ITEMS_HIGH, "goals": D("9.0")})
    lowered = {"srs-item.threshold": 8}
    assert "item-checkin" not in raised("38.0", items={**ITEMS_HIGH, "goals": D("8.0")}, overrides=lowered)


def test_repeated_ceiling_needs_three_sessions_in_a_row_and_says_its_setting():
    assert "ceiling" not in raised("40.0", ["40.0"])
    assert raised("40.0", ["40.0", "40.0"])["ceiling"].startswith("SRS at or above 40 for 3 sessions in a row.")
    assert "ceiling" not in raised("40.0", ["39.9", "40.0"])
    lowered = raised("39.5", ["39.6", "39.8"], overrides={"srs-ceiling.threshold": 39.5})
    assert lowered["ceiling"].startswith("SRS at or above 39.5 for 3 sessions in a row.")


def test_sustained_decline_needs_a_fall_at_every_session_and_a_minimum_overall_fall():
    # Finding 2: 39.2 → 39.1 → 39.0 is noise on a hand-marked line, not a rupture.
    assert "sustained-decline" not in raised("39.0", ["39.1", "39.2"])
    said = raised("37.0", ["38.0", "39.5"])["sustained-decline"]
    assert said.startswith("SRS has fallen session after session: 39.5 → 38 → 37 (down 2.5 over 3 sessions)")
    assert "sustained-decline" in raised("38.0", ["38.5", "39.0"])  # exactly the default 1 point
    assert "sustained-decline" not in raised("38.1", ["38.5", "39.0"])
    assert "sustained-decline" not in raised("37.0", ["38.0", "37.5"])  # not lower at every session
    assert "sustained-decline" not in raised("37.0", ["38.0"])  # only two sessions
    # The site's minimum fall is the rule's threshold and is obeyed.
    assert "sustained-decline" not in raised("37.0", ["38.0", "38.9"], overrides={"srs-decline.threshold": 2})
    assert "sustained-decline" in raised("36.9", ["38.0", "38.9"], overrides={"srs-decline.threshold": 2})
    four = raised("36.0", ["37.0", "38.0", "39.0"], overrides={"srs-decline.window": 4})
    assert "over 4 sessions" in four["sustained-decline"]


def test_reliable_deterioration_from_intake():
    assert raised("20.0", ["24.0", "25.0"], rules=ORS)["deterioration"].startswith(
        "ORS 20, down 5 since intake (25): reliable deterioration."
    )
    assert "deterioration" not in raised("20.1", ["24.0", "25.0"], rules=ORS)


def test_intake_rules_share_the_cutoff_and_never_contradict_it():
    """Finding 3: the intake-above-cutoff Flag is the complement of the clinical-range Flag, whatever the site's
    comparator: exactly one of the two at every intake value."""
    for overrides in (None, {"ors-cutoff.comparator": "<="}, {"ors-cutoff.threshold": 26}):
        for total in ("20.0", "24.9", "25.0", "25.1", "26.0", "30.0"):
            flags = raised(total, rules=ORS, overrides=overrides)
            assert ("below-cutoff" in flags) != ("intake-above-cutoff" in flags), (overrides, total, flags)
    at_or_below = raised("25.0", rules=ORS, overrides={"ors-cutoff.comparator": "<="})
    assert "in the clinical range (at or below 25)" in at_or_below["below-cutoff"]
    above = raised("30.0", rules=ORS, overrides={"ors-cutoff.comparator": "<="})
    assert above["intake-above-cutoff"].startswith("ORS 30 at intake, above 25.")


def test_another_raters_flag_says_who_rated():
    said = raised("34.0", rules=ORS, series="other:mother")["intake-above-cutoff"]
    assert said.startswith("Rated by mother, not the client: ORS 34 at intake, at or above 25.")
    assert raised("20.0", rules=ORS, series="other:")["below-cutoff"].startswith("Rated by another person")


def test_wai_sr_drop_names_every_subscale_that_fell():
    before = TherapySession("2026-01-01", {"bond-mean": D("4.5"), "goal-mean": D("4.25"), "task-mean": D("4")})
    today = {"bond-mean": D("3.5"), "goal-mean": D("3.5"), "task-mean": D("3.25"), "total": D(40)}
    (flag,) = evaluate_flags(WAI, today, {}, [before], "adult", settings())
    assert flag.score_ids == ("bond-mean", "goal-mean", "task-mean")
    assert "Bond 4.5 → 3.5, Goal 4.25 → 3.5 and Task 4 → 3.25" in flag.message
    assert "-mean" not in flag.message


def _interpreted(total, history=(), band="adult", overrides=None):
    sessions = [TherapySession("2026-01-01", {"total": D(str(v))}) for v in history]
    found = interpretations(ORS, "total", D(total), sessions, band, settings(overrides))
    return [(i["coding"][0]["code"], i["text"]) for i in found]


def test_interpretations_cutoff_by_age_band_and_reliable_change():
    assert _interpreted("26.0")[0] == ("N", "At or above the cutoff (25)")
    assert _interpreted("26.0", band="adolescent")[0][0] == "L"  # 28 for adolescents
    assert _interpreted("31.0", band="child")[0][0] == "L"  # 32 for children
    improved = _interpreted("27.0", ["20.0"])
    assert ("B", "Reliable improvement since intake (+7)") in improved
    assert ("B", "Clinically significant change") in improved  # from below 25 to at/above it
    # intake already at/above the cutoff: reliable improvement, but not clinically significant change
    assert ("B", "Clinically significant change") not in _interpreted("31.0", ["26.0"])
    assert ("W", "Reliable deterioration since intake (-5)") in _interpreted("20.0", ["25.0"])


def test_clinically_significant_change_uses_the_sites_cutoff():
    """Finding 3: with the cutoff at 26, 25.0 is still in the clinical range: never 'clinically significant'."""
    at_26 = _interpreted("25.0", ["20.0"], overrides={"ors-cutoff.threshold": 26})
    assert ("L", "Below the cutoff (26)") in at_26
    assert ("B", "Clinically significant change") not in at_26
    at_26_reached = _interpreted("26.0", ["20.0"], overrides={"ors-cutoff.threshold": 26})
    assert ("B", "Clinically significant change") in at_26_reached
    at_or_below = _interpreted("25.0", ["19.0"], overrides={"ors-cutoff.comparator": "<="})
    assert ("L", "At or below the cutoff (25)") in at_or_below
    assert ("B", "Clinically significant change") not in at_or_below

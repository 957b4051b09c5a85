"""Golden tests of every indicator (issue 20): a hand-built practice whose expected numerators, denominators and
strata are worked out here, by hand, from the scoring rules' settings (SRS cutoff 36, ORS adult cutoff 25,
reliable change 5), on both databases; with the boundaries — a Flag acknowledged exactly at the next session, a
last session exactly N days before the period's end, a birthday on the day of the session.

The practice (period January to June 2026; programs A and B of one organisation; clinicians ca and cb; sessions
as ORS total / SRS total; every session under an Encounter unless said):

- p1, born 1980-05-10, A, ca: 02-02 20/38; 02-09 24/32 (Flags below-cutoff and drop, acknowledged 02-16 09:00);
  02-16 32/40 and a WAI-SR with every item 4.
- p2, born 1990-01-01, A, ca: 03-02 24/32 (Flag acknowledged 03-09 09:50, the instant of the next SRS);
  03-09 16/34 (Flag).
- p3, born 2010-06-10, B, cb: 06-10 28/40 (first session within the last 30 days: too early to call a dropout).
- p4, born 2008-05-31, B, cb: 05-31 24/38 (18 that day; its only session exactly 30 days before the end).
- p5, born 1970-02-02, B, cb: 06-01 SRS 38 only (29 days before the end: too early).
- p6, born 1985-07-07, A, ca: 04-01 SRS 36 only, no Encounter; 04-08 ORS 24 only and a WAI-SR of 2s, no Encounter.
- p7, born 1960-01-01, A, cb: 2025-12-15 16/38 (before the period); 01-12 28/40.

The therapist's rating (its gap with the client's SRS: scoring/concordance.py): p1 02-09 38 by ca (gap +6); p2
03-09 36 by ca (+2); p4 05-31 34 by cb (-4); p6 04-01 38 by ca without an Encounter (no pair); p7 2025-12-15 40 by
cb (+2, before the period).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server.validation import validate_resource
from tests.reporting.practice import Practice, clients, counts, score, strata

LOW, LOWER, HIGH, TOP, MID = (80, 80, 80, 80), (85, 85, 85, 85), (95, 95, 95, 95), (100, 100, 100, 100), (90,) * 4


@pytest.fixture(scope="module")
def practice(server) -> Any:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.fhir_base, timeout=30, headers={"Accept": "application/fhir+json"}) as client:
        import uuid

        p = Practice(client, uuid.uuid4().hex[:12])
        a, b, ca, cb = p.program_a, p.program_b, p.ca, p.cb
        p1, p2, p3 = p.patient("p1", "1980-05-10"), p.patient("p2", "1990-01-01"), p.patient("p3", "2010-06-10")
        p4, p5, p6 = p.patient("p4", "2008-05-31"), p.patient("p5", "1970-02-02"), p.patient("p6", "1985-07-07")
        p7 = p.patient("p7", "1960-01-01")
        p.session(p1, "2026-02-02", ca, a, ors=50, srs=HIGH)
        p.session(p1, "2026-02-09", ca, a, ors=60, srs=LOW, therapist=HIGH)
        assert p.acknowledge(p1, "2026-02-09T09:50:00Z", "2026-02-16T09:00:00Z") >= 2
        p.session(p1, "2026-02-16", ca, a, ors=80, srs=TOP, wai="4")
        p.session(p2, "2026-03-02", ca, a, ors=60, srs=LOW)
        assert p.acknowledge(p2, "2026-03-02T09:50:00Z", "2026-03-09T09:50:00Z") >= 1
        p.session(p2, "2026-03-09", ca, a, ors=40, srs=LOWER, therapist=MID)
        p.session(p3, "2026-06-10", cb, b, ors=70, srs=TOP)
        p.session(p4, "2026-05-31", cb, b, ors=60, srs=HIGH, therapist=LOWER)
        p.session(p5, "2026-06-01", cb, b, srs=HIGH)
        p.session(p6, "2026-04-01", ca, a, srs=MID, therapist=HIGH, encounter=False)
        p.session(p6, "2026-04-08", ca, a, ors=60, wai="2", encounter=False)
        p.session(p7, "2025-12-15", cb, a, ors=40, srs=HIGH, therapist=TOP)
        p.session(p7, "2026-01-12", cb, a, ors=70, srs=TOP)
        yield p


def group(report: dict[str, Any], index: int = 0) -> dict[str, Any]:
    validate_resource(report)  # every report is a valid R4 MeasureReport
    return report["group"][index]


def test_share_of_sessions_below_the_srs_cutoff(practice):
    found = group(practice.report("srs-below-cutoff"))
    assert counts(found) == {"initial-population": 10, "denominator": 10, "numerator": 3}
    assert score(found) == 0.3 and clients(found) == 7
    programs = strata(found, "program")
    assert counts(programs[practice.program_a]) == {"initial-population": 7, "denominator": 7, "numerator": 3}
    assert counts(programs[practice.program_b])["numerator"] == 0 and clients(programs[practice.program_b]) == 3
    clinicians = strata(found, "clinician")
    assert (counts(clinicians[practice.ca])["denominator"], counts(clinicians[practice.ca])["numerator"]) == (6, 3)
    assert (counts(clinicians[practice.cb])["denominator"], counts(clinicians[practice.cb])["numerator"]) == (4, 0)
    months = {m: (counts(s)["denominator"], counts(s)["numerator"]) for m, s in strata(found, "month").items()}
    assert months == {"2026-01": (1, 0), "2026-02": (3, 1), "2026-03": (2, 2), "2026-04": (1, 0),
                      "2026-05": (1, 0), "2026-06": (2, 0)}  # fmt: skip
    ages = {band: counts(s)["denominator"] for band, s in strata(found, "age-band").items()}
    assert ages == {"13-17": 1, "18-25": 1, "26-64": 7, "65 and over": 1}  # p4 turned 18 on the day
    assert {k: counts(s)["denominator"] for k, s in strata(found, "instrument").items()} == {"SRS": 10}


def test_srs_ceiling_and_mean(practice):
    ceiling = group(practice.report("srs-ceiling"))
    assert (counts(ceiling)["numerator"], counts(ceiling)["denominator"], score(ceiling)) == (3, 10, 0.3)
    mean = group(practice.report("srs-mean"))
    assert counts(mean) == {"initial-population": 10, "measure-population": 10, "measure-observation": 10}
    assert mean["measureScore"] == {"value": 36.8, "unit": "{score}", "system": "http://unitsofmeasure.org",
                                    "code": "{score}"}  # fmt: skip
    by_clinician = {k: score(s) for k, s in strata(mean, "clinician").items()}
    assert by_clinician == {practice.ca: 35.33, practice.cb: 39.0}  # (38+32+40+32+34+36)/6, (40+38+38+40)/4


def test_mean_therapist_client_gap(practice):
    found = group(practice.report("therapist-gap"))
    assert counts(found) == {"initial-population": 3, "measure-population": 3, "measure-observation": 3}
    assert score(found) == 1.33  # (6 + 2 - 4) / 3: p6's rating had no session to pair with, p7's is before
    assert {k: score(s) for k, s in strata(found, "clinician").items()} == {practice.ca: 4.0, practice.cb: -4.0}
    assert {k: score(s) for k, s in strata(found, "month").items()} == {"2026-02": 6.0, "2026-03": 2.0, "2026-05": -4.0}


def test_srs_completion_counts_sessions_held(practice):
    found = group(practice.report("srs-completion"))
    # p6's SRS-only day without an Encounter is not a session held; its ORS-only day is one, without an SRS
    assert counts(found) == {"initial-population": 10, "denominator": 10, "numerator": 9}
    assert score(found) == 0.9
    assert {k: counts(s)["numerator"] for k, s in strata(found, "program").items()} == {
        practice.program_a: 6, practice.program_b: 3,
    }  # fmt: skip


def test_concern_followed_up(practice):
    found = group(practice.report("concern-followed-up"))
    # p1's two Flags (below the cutoff, a drop): acknowledged before the next SRS, which was 40: followed up.
    # p2's first: acknowledged at the very instant of the next SRS (counts as before it), but that SRS was 34.
    # p2's second: no later SRS yet: excluded.
    assert counts(found) == {"initial-population": 4, "denominator": 4, "denominator-exclusion": 1, "numerator": 2}
    assert score(found) == 0.6667
    assert {k: counts(s)["initial-population"] for k, s in strata(found, "month").items()} == {
        "2026-02": 2, "2026-03": 2,
    }  # fmt: skip


def test_early_dropout(practice):
    found = group(practice.report("early-dropout"))
    # first session in the period: p1-p6 (p7 began in 2025); too early to tell: p3 (06-10), p5 (06-01, 29 days
    # before the end); dropped out: p2 (2 sessions), p4 (its one session exactly 30 days before the end), p6
    assert counts(found) == {"initial-population": 6, "denominator": 6, "denominator-exclusion": 2, "numerator": 3}
    assert score(found) == 0.75
    programs = strata(found, "program")
    assert counts(programs[practice.program_b]) == {
        "initial-population": 3, "denominator": 3, "denominator-exclusion": 2, "numerator": 1,
    }  # fmt: skip
    # a period ending a day earlier: p4's session (05-31) is now within its last 30 days: too early to tell, with
    # p3 and p5; p2 and p6 remain dropouts
    shorter = group(practice.report("early-dropout", end="2026-06-29"))
    assert counts(shorter) == {"initial-population": 6, "denominator": 6, "denominator-exclusion": 3, "numerator": 2}


def test_ors_change_from_intake(practice):
    found = group(practice.report("ors-change"))
    # p1 20 → 32 (+12), p2 24 → 16 (-8), p7 16 (in 2025) → 28 (+12); p3, p4, p6 have one ORS
    assert counts(found) == {"initial-population": 3, "measure-population": 3, "measure-observation": 3}
    assert score(found) == 5.33
    assert {k: score(s) for k, s in strata(found, "clinician").items()} == {practice.ca: 2.0, practice.cb: 12.0}


def test_ors_reliable_and_clinically_significant_change(practice):
    report = practice.report("ors-reliable-change")
    improved, deteriorated, significant = (group(report, i) for i in range(3))
    assert (counts(improved)["numerator"], counts(improved)["denominator"]) == (2, 3)  # p1, p7
    assert (counts(deteriorated)["numerator"], counts(deteriorated)["denominator"]) == (1, 3)  # p2
    assert (counts(significant)["numerator"], counts(significant)["denominator"]) == (2, 3)  # from < 25 to >= 25
    assert score(improved) == 0.6667


def test_wai_sr_subscale_means(practice):
    report = practice.report("wai-sr-subscales")
    for index in range(3):  # bond, goal, task: p1's all-4 and p6's all-2
        found = group(report, index)
        assert counts(found)["measure-population"] == 2 and score(found) == 3.0


def test_a_practitioner_subject_counts_their_sessions(practice):
    report = practice.report("srs-below-cutoff", subject=practice.ca)
    assert report["subject"] == {"reference": practice.ca}
    assert (counts(group(report))["denominator"], counts(group(report))["numerator"]) == (6, 3)


def test_subject_list_names_the_clients(practice):
    report = practice.report("srs-below-cutoff", reportType="subject-list")
    lists = {item["id"]: item for item in report["contained"]}
    numerator = next(p for p in group(report)["population"] if p["code"]["coding"][0]["code"] == "numerator")
    members = {e["item"]["reference"] for e in lists[numerator["subjectResults"]["reference"][1:]]["entry"]}
    assert members == {f"Patient/{practice.uid}-p1", f"Patient/{practice.uid}-p2"}

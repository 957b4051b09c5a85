"""Clinical safety, session by session, through the API on both databases: each finding of the clinical review
as a sequence of sessions and exactly the Flags it must raise, close and word, with the site's settings where
the finding was about settings.  (Rules in isolation: test_flag_rules.py.)"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from fhir_server.config import Settings
from tests.api.fhir import post, put
from tests.scoring.test_pipeline import active_flags, srs, submit
from tests.support.server import ServerThread

ORS = "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2"
RESPONDENT = "http://fit-fhir.org/fhir/CodeSystem/fit-respondent"
SERIES = "http://fit-fhir.org/fhir/StructureDefinition/respondent-series"


def ors(patient: str, marks: tuple[int, int, int, int], authored: str, rater: str | None = None) -> dict:
    """An ORS by the client, or by ``rater`` (another person: "who is filling out this form")."""
    names = ("individually", "interpersonally", "socially", "overall")
    who = [
        {
            "linkId": "respondent",
            "answer": [{"valueCoding": {"system": RESPONDENT, "code": "other" if rater else "self"}}],
        }
    ]
    if rater:
        who.append({"linkId": "respondent-relationship", "answer": [{"valueString": rater}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": ORS,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": authored,
        "item": [*who, *({"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True))],
    }


def flags(client: httpx.Client, patient: str, status: str = "active") -> list[dict]:
    found = client.get("/Flag", params={"patient": patient, "status": status, "_count": "200"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def by_code(client: httpx.Client, patient: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for flag in flags(client, patient):
        out.setdefault(flag["code"]["coding"][0]["code"], []).append(flag)
    return out


def rater_of(flag: dict) -> str:
    return next(e["valueString"] for e in flag["extension"] if e["url"] == SERIES)


def observation(client: httpx.Client, patient: str, code: str) -> dict:
    found = client.get(
        "/Observation", params={"subject": f"Patient/{patient}", "code": code, "_sort": "-date", "_count": "1"}
    ).json()
    return found["entry"][0]["resource"]


def patient(client: httpx.Client, patient_id: str, birth_date: str | None) -> None:
    body = {"resourceType": "Patient", "id": patient_id, **({"birthDate": birth_date} if birth_date else {})}
    assert put(client, f"/Patient/{patient_id}", body).status_code in (200, 201)


@pytest.fixture(scope="module")
def site(database_url: str, backend: str) -> Iterator[httpx.Client]:
    """A second server on the same database with a site's settings (the findings were about these)."""
    overrides = {"srs-decline.threshold": 2, "ors-cutoff.comparator": "<=", "srs-cutoff.comparator": "<="}
    settings = Settings(database_url=database_url, scoring_overrides=overrides, _env_file=None)
    with ServerThread(settings, backend) as running, httpx.Client(base_url=running.fhir_base, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def cutoff_26(database_url: str, backend: str) -> Iterator[httpx.Client]:
    settings = Settings(database_url=database_url, scoring_overrides={"ors-cutoff.threshold": 26}, _env_file=None)
    with ServerThread(settings, backend) as running, httpx.Client(base_url=running.fhir_base, timeout=30) as c:
        yield c


# -- 1. another rater's response is judged within its own series --------------------------------------------
def test_another_raters_ors_never_closes_the_clients_flag_and_says_who_rated(client, uid):
    patient(client, uid, "2010-05-01")  # 16 in 2026: the adolescent cutoff, 28
    submit(client, ors(uid, (50, 50, 50, 50), "2026-03-02T10:00:00Z"))  # self 20.0
    assert [rater_of(f) for f in by_code(client, uid)["ors-below-cutoff"]] == ["self"]
    submit(client, ors(uid, (85, 85, 85, 85), "2026-03-03T10:00:00Z", rater="Mother"))  # mother 34.0
    now = by_code(client, uid)
    assert [rater_of(f) for f in now["ors-below-cutoff"]] == ["self"]  # the client's own Flag stays open
    (mothers,) = now["ors-intake-above-cutoff"]  # the mother's first rating is her series' intake
    assert rater_of(mothers) == "other:mother"
    assert mothers["code"]["text"].startswith("Rated by mother, not the client: ORS 34 at intake, at or above 28.")
    # The client's next session is compared with the client's intake (20), not the mother's 34.
    submit(client, ors(uid, (60, 60, 60, 60), "2026-03-09T10:00:00Z"))  # self 24.0
    total = observation(client, uid, "ors-total")
    assert "ors-deterioration" not in by_code(client, uid)
    assert not any("since intake" in i["text"] for i in total.get("interpretation", []))
    now = by_code(client, uid)
    assert [(rater_of(f), f["code"]["text"][:7]) for f in now["ors-below-cutoff"]] == [("self", "ORS 24:")]
    assert [rater_of(f) for f in now["ors-intake-above-cutoff"]] == ["other:mother"]


# -- 2. the sustained decline needs a minimum fall, and obeys its setting -------------------------------------
def test_tenths_of_a_point_are_not_a_decline(client, uid):
    for day, marks in enumerate(((98, 98, 98, 98), (98, 98, 98, 97), (98, 98, 97, 97)), start=1):  # 39.2 39.1 39.0
        submit(client, srs(uid, marks, f"2026-04-{day:02d}T10:00:00Z"))
    assert "srs-sustained-decline" not in by_code(client, uid)
    submit(client, srs(uid, (94, 94, 94, 93), "2026-04-04T10:00:00Z"))  # 37.5: 39.1 → 39.0 → 37.5, down 1.6
    (decline,) = by_code(client, uid)["srs-sustained-decline"]
    assert decline["code"]["text"].startswith("SRS has fallen session after session: 39.1 → 39 → 37.5 (down 1.6")


def test_the_decline_settings_minimum_fall_is_obeyed(site, uid):
    for day, marks in enumerate(((99, 99, 99, 98), (97, 96, 96, 96), (94, 94, 94, 94)), start=1):  # 39.5 38.5 37.6
        submit(site, srs(uid, marks, f"2026-04-{day:02d}T10:00:00Z"))
    assert "srs-sustained-decline" not in by_code(site, uid)  # down 1.9 < 2
    submit(site, srs(uid, (92, 92, 92, 93), "2026-04-04T10:00:00Z"))  # 36.9: 38.5 → 37.6 → 36.9, down 1.6
    assert "srs-sustained-decline" not in by_code(site, uid)
    submit(site, srs(uid, (88, 88, 88, 87), "2026-04-05T10:00:00Z"))  # 35.1: 37.6 → 36.9 → 35.1, down 2.5
    assert "srs-sustained-decline" in by_code(site, uid)


# -- 3. settings never leak between rules; derived statements use the rule's values ----------------------------
def test_an_intake_is_in_the_clinical_range_or_above_it_never_both(site, uid):
    submit(site, ors(f"{uid}-a", (50, 50, 50, 50), "2026-05-01T10:00:00Z"))  # 20.0 with "<="
    first = by_code(site, f"{uid}-a")
    assert set(first) == {"ors-below-cutoff"}
    assert "in the clinical range (at or below 25)" in first["ors-below-cutoff"][0]["code"]["text"]
    submit(site, ors(f"{uid}-b", (75, 75, 75, 75), "2026-05-01T10:00:00Z"))  # 30.0
    second = by_code(site, f"{uid}-b")
    assert set(second) == {"ors-intake-above-cutoff"}
    assert second["ors-intake-above-cutoff"][0]["code"]["text"].startswith("ORS 30 at intake, above 25.")
    submit(site, ors(f"{uid}-c", (63, 62, 62, 63), "2026-05-01T10:00:00Z"))  # 25.0: at the cutoff, "<=" flags it
    assert set(by_code(site, f"{uid}-c")) == {"ors-below-cutoff"}


def test_a_changed_cutoff_reaches_clinically_significant_change(cutoff_26, uid):
    submit(cutoff_26, ors(uid, (50, 50, 50, 50), "2026-05-01T10:00:00Z"))  # 20.0
    submit(cutoff_26, ors(uid, (63, 62, 62, 63), "2026-05-08T10:00:00Z"))  # 25.0: still below 26
    texts = [i["text"] for i in observation(cutoff_26, uid, "ors-total")["interpretation"]]
    assert texts == ["Below the cutoff (26)", "Reliable improvement since intake (+5)"]
    assert observation(cutoff_26, uid, "ors-total")["referenceRange"][0]["low"]["value"] == 26


def test_the_srs_comparator_reaches_the_text_and_the_reference_range(site, uid):
    submit(site, srs(uid, (90, 90, 90, 90), "2026-05-01T10:00:00Z"))  # 36.0 with "<="
    (below,) = by_code(site, uid)["srs-below-cutoff"]
    assert below["code"]["text"].startswith("SRS 36 today, at or below 36.")
    total = observation(site, uid, "srs-total")
    assert total["interpretation"][0]["text"] == "At or below the cutoff (36)"
    (reference,) = total["referenceRange"]
    assert reference["low"]["value"] == 36.1 and reference["text"].startswith("Above 36:")


# -- 4. texts ------------------------------------------------------------------------------------------------
def test_alliance_scores_have_no_clinical_range(client, uid):
    submit(client, srs(uid, (95, 95, 95, 95), "2026-06-01T10:00:00Z"))
    submit(client, ors(uid, (80, 80, 80, 80), "2026-06-01T09:00:00Z"))
    srs_range = observation(client, uid, "srs-total")["referenceRange"][0]["text"]
    assert "clinical range" not in srs_range and "alliance" in srs_range
    assert observation(client, uid, "ors-total")["referenceRange"][0]["text"] == (
        "At or above 25: outside the clinical range"
    )


def test_consecutive_sessions_leave_one_active_flag_per_rule(client, uid):
    for week, mark in enumerate((50, 52, 55), start=1):  # 20, 20.8, 22: in the clinical range every week
        submit(client, ors(uid, (mark,) * 4, f"2026-06-{week:02d}T10:00:00Z"))
    now = by_code(client, uid)
    assert len(now["ors-below-cutoff"]) == 1 and now["ors-below-cutoff"][0]["code"]["text"].startswith("ORS 22:")
    closed = [f for f in flags(client, uid, "inactive") if f["code"]["coding"][0]["code"] == "ors-below-cutoff"]
    assert len(closed) == 2 and all(f["period"].get("end") for f in closed)


def test_the_item_check_in_speaks_the_instruments_labels(client, uid):
    submit(client, srs(uid, (95, 85, 95, 80), "2026-06-01T10:00:00Z"))
    (checkin,) = by_code(client, uid)["srs-item-checkin"]
    text = checkin["code"]["text"]
    assert text.startswith("Lower today: Goals and Topics 8.5 and Overall 8.")
    assert "working on what you wanted to work on or today's session as a whole" in text
    assert "SRS " not in text


# -- 6. age ----------------------------------------------------------------------------------------------------
def test_an_ors_for_a_twelve_year_old_says_so(client, uid):
    patient(client, uid, "2014-01-15")  # 12 on 2026-06-01
    answer = post(
        client, "/QuestionnaireResponse", ors(uid, (70,) * 4, "2026-06-01T10:00:00Z"), Prefer="return=OperationOutcome"
    )
    assert answer.status_code == 201
    notes = [i["diagnostics"] for i in answer.json()["issue"] if i["severity"] == "information"][1:]
    expected = (
        "The client was 12 when rated; the ORS is for ages 13 and over (the CORS is for ages 6 to 12, the YCORS for "
        "under 6). Scored against the child cutoff (32)."
    )
    assert notes == [expected]
    assert observation(client, uid, "ors-total")["note"] == [{"text": expected}]


def test_no_birth_date_is_scored_on_the_adult_cutoff_and_says_so(client, uid):
    submit(client, ors(uid, (70,) * 4, "2026-06-01T10:00:00Z"))
    total = observation(client, uid, "ors-total")
    assert total["note"] == [
        {"text": "No birth date on record: the ORS was scored as an adult's. Scored against the adult cutoff (25)."}
    ]
    assert total["interpretation"][0]["text"] == "At or above the cutoff (25)"


def test_an_adult_in_range_gets_no_note(client, uid):
    patient(client, uid, "1980-01-01")
    submit(client, ors(uid, (70,) * 4, "2026-06-01T10:00:00Z"))
    submit(client, srs(uid, (95,) * 4, "2026-06-01T11:00:00Z"))
    assert "note" not in observation(client, uid, "ors-total") and "note" not in observation(client, uid, "srs-total")


# -- 7. active Flags stay bounded ---------------------------------------------------------------------------------
def test_at_most_one_active_flag_per_client_rule_and_rater_whatever_the_sessions(client, uid):
    rng = random.Random(uid)
    for week in range(30):  # random marks 60-100 mm: every SRS rule fires now and then
        marks = tuple(rng.randint(60, 100) for _ in range(4))
        submit(client, srs(uid, marks, f"2026-{1 + week // 28:02d}-{1 + week % 28:02d}T10:00:00Z"))
        if week % 3 == 0:
            rater = rng.choice([None, "Mother", "father"])
            submit(
                client,
                ors(
                    uid,
                    tuple(rng.randint(30, 100) for _ in range(4)),
                    f"2026-{1 + week // 28:02d}-{1 + week % 28:02d}T09:00:00Z",
                    rater,
                ),
            )
        counts = Counter((f["code"]["coding"][0]["code"], rater_of(f)) for f in flags(client, uid))
        assert all(n == 1 for n in counts.values()), (week, counts)
    assert len(flags(client, uid, "inactive")) > 10  # the rules did fire, and were closed
    assert active_flags(client, uid)  # and some are open now


# -- a retracted session's evidence is void ----------------------------------------------------------------------
def _retract(client: httpx.Client, response: dict) -> None:
    assert put(
        client, f"/QuestionnaireResponse/{response['id']}", {**response, "status": "entered-in-error"}
    ).is_success


def test_retracting_the_latest_session_reopens_the_concern_it_superseded(client, uid):
    first = submit(client, ors(uid, (50,) * 4, "2026-07-01T10:00:00Z"))  # 20.0
    second = submit(client, ors(uid, (52,) * 4, "2026-07-08T10:00:00Z"))  # 20.8: supersedes the first's Flag
    assert [f["id"] for f in by_code(client, uid)["ors-below-cutoff"]] == [f"{second['id']}-below-cutoff"]
    _retract(client, second)
    (reopened,) = by_code(client, uid)["ors-below-cutoff"]
    assert reopened["id"] == f"{first['id']}-below-cutoff" and "end" not in reopened["period"]
    gone = client.get(f"/Flag/{second['id']}-below-cutoff").json()
    assert gone["status"] == "entered-in-error"


def test_retracting_an_earlier_session_leaves_the_later_state(client, uid):
    submit(client, ors(uid, (50,) * 4, "2026-07-01T10:00:00Z"))  # 20.0
    second = submit(client, ors(uid, (52,) * 4, "2026-07-08T10:00:00Z"))  # 20.8
    third = submit(client, ors(uid, (55,) * 4, "2026-07-15T10:00:00Z"))  # 22.0
    _retract(client, second)
    assert [f["id"] for f in by_code(client, uid)["ors-below-cutoff"]] == [f"{third['id']}-below-cutoff"]


def test_retracting_a_session_that_resolved_a_concern_reopens_it(client, uid):
    first = submit(client, srs(uid, (85,) * 4, "2026-07-01T10:00:00Z"))  # 34.0: below 36
    second = submit(client, srs(uid, (95,) * 4, "2026-07-08T10:00:00Z"))  # 38.0: resolves it
    assert "srs-below-cutoff" not in by_code(client, uid)
    _retract(client, second)
    assert [f["id"] for f in by_code(client, uid)["srs-below-cutoff"]] == [f"{first['id']}-below-cutoff"]

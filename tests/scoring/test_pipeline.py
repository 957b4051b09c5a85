"""Scoring pipeline (issue: every completed QuestionnaireResponse becomes Observations and Flags, in one
transaction): the results a submission writes, found by the searches clinicians and integrators use; replays;
amended and entered-in-error responses; a client's sessions raising and closing flags; atomicity."""

from __future__ import annotations

import pytest

from fhir_server.scoring import pipeline as pipeline_module
from fhir_server.store import clinical
from fhir_server.validation import validate_resource
from tests.api.fhir import post, put

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
FLAGS = "http://fit-fhir.org/fhir/CodeSystem/fit-flags"
MEASURES = "http://fit-fhir.org/fhir/CodeSystem/fit-measures"


def srs(patient: str, marks: tuple[int, int, int, int], authored: str, **extra) -> dict:
    names = ("relationship", "goals", "approach", "overall")
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": SRS,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{patient}-visit"},
        "author": {"reference": f"Patient/{patient}"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True)],
        **extra,
    }


def submit(client, response) -> dict:
    answer = post(client, "/QuestionnaireResponse", response)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def results(client, patient: str) -> dict[str, list[dict]]:
    out = {}
    for resource_type in ("Observation", "Flag", "Provenance"):
        params = {"_count": "100"}
        if resource_type == "Provenance":  # scoring's Provenances name the response as their entity
            qrs = [
                f"QuestionnaireResponse/{e['resource']['id']}"
                for e in client.get("/QuestionnaireResponse", params={"subject": f"Patient/{patient}", "_count": "100"})
                .json()
                .get("entry", [])
            ]
            out["Provenance"] = [
                e["resource"]
                for qr in qrs
                for e in client.get("/Provenance", params={"entity": qr, "_count": "100"}).json().get("entry", [])
            ]
            continue
        params["subject"] = f"Patient/{patient}"
        out[resource_type] = [
            e["resource"] for e in client.get(f"/{resource_type}", params=params).json().get("entry", [])
        ]
    return out


def active_flags(client, patient: str) -> list[str]:
    found = client.get("/Flag", params={"patient": patient, "status": "active"}).json()
    return sorted(e["resource"]["code"]["coding"][0]["code"] for e in found.get("entry", []))


def test_a_completed_srs_writes_observation_flags_and_provenance(client, uid):
    qr = submit(client, srs(uid, (85, 88, 80, 88), "2026-11-02T10:00:00+00:00"))  # 34.1, Approach lowest
    written = results(client, uid)
    [observation] = written["Observation"]
    validate_resource(observation)
    assert observation["status"] == "final"
    assert observation["valueQuantity"] == {
        "value": 34.1,
        "unit": "{score}",
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
    }
    codings = {(c["system"], c["code"]) for c in observation["code"]["coding"]}
    assert (MEASURES, "srs-total") in codings and ("http://snomed.info/sct", "720482000") in codings
    assert observation["category"][0]["coding"][0]["code"] == "survey"
    assert observation["effectiveDateTime"] == "2026-11-02T10:00:00+00:00"
    assert observation["encounter"] == {"reference": f"Encounter/{uid}-visit"}
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{qr['id']}"}]
    assert observation["interpretation"][0]["coding"][0]["code"] == "L"
    items = {c["code"]["coding"][0]["code"]: c.get("valueQuantity", {}).get("value") for c in observation["component"]}
    assert items["srs-approach"] == 8.0 and items["srs-relationship"] == 8.5
    codes = sorted(f["code"]["coding"][0]["code"] for f in written["Flag"])
    assert codes == ["srs-below-cutoff", "srs-item-checkin"]
    below = next(f for f in written["Flag"] if f["code"]["coding"][0]["code"] == "srs-below-cutoff")
    validate_resource(below)
    assert below["status"] == "active" and below["author"]["reference"] == "Device/fit-scoring-engine"
    assert "34.1" in below["code"]["text"] and "?" in below["code"]["text"]  # the follow-up question
    detail = next(e for e in below["extension"] if e["url"].endswith("flag-detail"))
    assert detail["valueReference"]["reference"] == f"Observation/{observation['id']}"
    [provenance] = written["Provenance"]
    validate_resource(provenance)
    assert {t["reference"] for t in provenance["target"]} == {f"Observation/{observation['id']}"} | {
        f"Flag/{f['id']}" for f in written["Flag"]
    }
    # found by the searches the issue names
    by_code = client.get("/Observation", params={"patient": uid, "code": f"{MEASURES}|srs-total"}).json()
    assert by_code["total"] == 1
    assert active_flags(client, uid) == ["srs-below-cutoff", "srs-item-checkin"]


def test_the_same_submission_three_times_yields_one_set_of_results(client, uid):
    response = srs(
        uid, (95, 95, 95, 95), "2026-11-02T10:00:00+00:00", identifier={"system": "urn:test:launch", "value": uid}
    )
    first = post(client, "/QuestionnaireResponse", response)
    again = [post(client, "/QuestionnaireResponse", response) for _ in range(2)]
    assert first.status_code == 201 and [a.status_code for a in again] == [200, 200]
    assert {a.json()["id"] for a in again} == {first.json()["id"]}
    replayed_put = put(client, f"/QuestionnaireResponse/{first.json()['id']}", first.json())
    assert replayed_put.json()["meta"]["versionId"] == "1"  # same content: no new version
    written = results(client, uid)
    assert len(written["Observation"]) == 1 and written["Observation"][0]["meta"]["versionId"] == "1"
    total = client.get("/QuestionnaireResponse", params={"subject": f"Patient/{uid}", "_total": "accurate"}).json()
    assert total["total"] == 1


def test_an_in_progress_response_is_not_scored(client, uid):
    partial = srs(uid, (90, 90, 90, 90), "2026-11-02T10:00:00+00:00", status="in-progress")
    partial["item"] = partial["item"][:2]
    submit(client, partial)
    assert results(client, uid)["Observation"] == []


def test_amended_rescoring_and_entered_in_error(client, uid):
    qr = submit(client, srs(uid, (85, 85, 85, 85), "2026-11-02T10:00:00+00:00"))  # 34.0: concern
    assert active_flags(client, uid) == ["srs-below-cutoff", "srs-item-checkin"]
    amended = {**qr, "status": "amended", "item": srs(uid, (95, 95, 95, 95), "x")["item"]}  # 38.0
    assert put(client, f"/QuestionnaireResponse/{qr['id']}", amended).status_code == 200
    [observation] = results(client, uid)["Observation"]
    assert observation["status"] == "amended" and observation["valueQuantity"]["value"] == 38.0
    assert observation["meta"]["versionId"] == "2"  # the same Observation, a new version
    assert active_flags(client, uid) == []
    ended = [f for f in results(client, uid)["Flag"] if f["status"] == "inactive"]
    assert len(ended) == 2 and all(f["period"]["end"] for f in ended)
    retracted = {**amended, "status": "entered-in-error"}
    assert put(client, f"/QuestionnaireResponse/{qr['id']}", retracted).status_code == 200
    written = results(client, uid)
    assert [o["status"] for o in written["Observation"]] == ["entered-in-error"]
    assert {f["status"] for f in written["Flag"]} == {"entered-in-error"}


def test_a_clients_sessions_raise_and_close_flags(client, uid):
    def session(marks, day):
        submit(client, srs(uid, marks, f"2026-10-{day:02d}T10:00:00+00:00"))
        return active_flags(client, uid)

    assert session((98, 98, 98, 98), 1) == []  # 39.2
    assert session((96, 96, 96, 96), 8) == []  # 38.4: down 0.8, no drop flag
    assert session((93, 93, 93, 93), 15) == ["srs-drop", "srs-sustained-decline"]  # 37.2: down 1.2; 3 declining
    # 38.0 next week: the drop and decline no longer hold, so the new session closes them
    assert session((95, 95, 95, 95), 22) == []
    assert session((100, 100, 100, 100), 29) == []  # 40
    assert session((100, 100, 100, 100), 30) == []  # 40 twice
    assert session((100, 100, 100, 100), 31) == ["srs-ceiling"]  # 40 three times in a row: normalising prompt


def test_ors_cutoff_depends_on_age_and_reliable_change_is_interpreted(client, uid):
    put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid, "birthDate": "2011-05-01"})  # 15: teen

    def marks(v):
        return [
            {"linkId": n, "answer": [{"valueInteger": v}]}
            for n in ("individually", "interpersonally", "socially", "overall")
        ]

    base = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/{uid}"},
    }
    self_report = [
        {
            "linkId": "respondent",
            "answer": [
                {"valueCoding": {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-respondent", "code": "self"}}
            ],
        }
    ]
    submit(client, {**base, "authored": "2026-09-01T10:00:00Z", "item": self_report + marks(65)})  # 26.0 intake
    assert "ors-below-cutoff" in active_flags(client, uid)  # 26 < 28 for adolescents (25 would not flag an adult)
    submit(client, {**base, "authored": "2026-10-01T10:00:00Z", "item": self_report + marks(80)})  # 32.0
    latest = client.get("/Observation", params={"patient": uid, "_sort": "-date", "_count": "1"}).json()["entry"][0]
    texts = [i["text"] for i in latest["resource"]["interpretation"]]
    assert "Reliable improvement since intake (+6)" in texts
    assert "Clinically significant change" in texts  # from below the cutoff to at/above it
    assert active_flags(client, uid) == []


def test_a_submission_reads_what_scoring_needs_with_its_replay_check(client, uid, monkeypatch):
    """The replay check (by the response's identifier) and the scoring read go together, before the response is
    stored (one round trip on PostgreSQL), and scoring does not read again: the history it sees is complete."""
    calls = {"together": 0, "again": 0}
    together, again = clinical.find_by_token_with_context, clinical.scoring_context

    def counted_together(*args):
        calls["together"] += 1
        return together(*args)

    def counted_again(*args):
        calls["again"] += 1
        return again(*args)

    monkeypatch.setattr(clinical, "find_by_token_with_context", counted_together)
    monkeypatch.setattr(clinical, "scoring_context", counted_again)
    for week, marks in enumerate(((98, 98, 98, 98), (96, 96, 96, 96), (93, 93, 93, 93))):
        launch = {"system": "urn:test:launch", "value": f"{uid}-{week}"}
        submit(client, srs(uid, marks, f"2026-10-{1 + 7 * week:02d}T10:00:00+00:00", identifier=launch))
    # At least once per submission (SQLite runs a submission's work again as the writer when it needs more than
    # reads, as a process's first ones do), and never a second read for scoring.
    assert calls["together"] >= 3 and calls["again"] == 0, calls
    assert active_flags(client, uid) == ["srs-drop", "srs-sustained-decline"]  # the earlier sessions were seen


@pytest.fixture
def fail_after_observations(monkeypatch):
    """Inject a failure after the Observations are written, before the transaction commits."""
    for name in ("_put", "_create"):  # update-or-create (re-scoring) and create (a new response)
        original = getattr(pipeline_module.ScoringPipeline, name)

        def failing(session, resource, original=original):
            stored = original(session, resource)
            if resource["resourceType"] == "Flag":
                raise RuntimeError("injected failure after the Observations were written")
            return stored

        monkeypatch.setattr(pipeline_module.ScoringPipeline, name, staticmethod(failing))


def test_a_failure_mid_pipeline_leaves_nothing_behind(client, uid, fail_after_observations):
    answer = post(client, "/QuestionnaireResponse", srs(uid, (80, 80, 80, 80), "2026-11-02T10:00:00+00:00"))
    assert answer.status_code == 500 and "Traceback" not in answer.text
    written = results(client, uid)
    assert written == {"Observation": [], "Flag": [], "Provenance": []}
    assert client.get("/QuestionnaireResponse", params={"subject": f"Patient/{uid}"}).json().get("entry") is None


def test_extract_returns_what_scoring_would_write_without_writing(client, uid):
    response = srs(uid, (85, 88, 80, 88), "2026-11-02T10:00:00+00:00")
    bundle = post(client, "/QuestionnaireResponse/$extract", response).json()
    assert bundle["type"] == "transaction"
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == ["Flag", "Flag", "Observation"]
    observation = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert observation["resource"]["valueQuantity"]["value"] == 34.1
    assert observation["request"]["ifNoneExist"].startswith("identifier=http://fit-fhir.org/fhir/scored-observation|")
    assert results(client, uid) == {"Observation": [], "Flag": [], "Provenance": []}  # nothing was written
    stored = submit(client, response)
    again = client.get(f"/QuestionnaireResponse/{stored['id']}/$extract").json()
    assert next(e["resource"]["id"] for e in again["entry"]) == f"{stored['id']}-total"
    bad = post(client, "/QuestionnaireResponse/$extract", {**response, "item": response["item"][:1]})
    assert bad.status_code == 422


def test_alliance_summary(client, uid):
    put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid})
    submit(client, srs(uid, (95, 95, 95, 95), "2026-10-01T10:00:00+00:00"))  # 38.0
    submit(client, srs(uid, (90, 80, 90, 90), "2026-10-08T10:00:00+00:00"))  # 35.0, goals lowest
    summary = client.get(f"/Patient/{uid}/$alliance-summary").json()
    measures = [p for p in summary["parameter"] if p["name"] == "measure"]
    [srs_measure] = measures
    parts = srs_measure["part"]
    assert next(p["valueCode"] for p in parts if p["name"] == "trend") == "falling"
    points = [
        {q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
        for p in parts
        if p["name"] == "point"
    ]
    assert [p["value"] for p in points] == [38.0, 35.0] and [p["flagged"] for p in points] == [False, True]
    items = {
        p["part"][0]["valueCoding"]["code"]: (p["part"][1]["valueDecimal"], p["part"][2]["valueDecimal"])
        for p in parts
        if p["name"] == "item"
    }
    assert items["srs-goals"] == (8.0, 9.5)
    flags = [p for p in summary["parameter"] if p["name"] == "active-flag"]
    codes = {next(q["valueCode"] for q in f["part"] if q["name"] == "code") for f in flags}
    assert codes == {"srs-below-cutoff", "srs-drop", "srs-item-checkin"}
    assert client.get("/Patient/nobody-here/$alliance-summary").status_code == 404


def _wai(uid: str, answers: dict[int, str], authored: str) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://fit-fhir.org/fhir/Questionnaire/wai-sr|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/{uid}"},
        "authored": authored,
        "item": [
            {
                "linkId": f"wai-sr-{n}",
                "answer": [
                    {
                        "valueCoding": {
                            "system": "http://fit-fhir.org/fhir/CodeSystem/wai-frequency",
                            "code": answers.get(n, "4"),
                        }
                    }
                ],
            }
            for n in range(1, 13)
        ],
    }


def test_wai_sr_subscales_and_a_subscale_drop(client, uid):
    submit(client, _wai(uid, {}, "2026-09-01T10:00:00Z"))  # every item 4: means 4.00
    observations = {o["code"]["coding"][0]["code"]: o for o in results(client, uid)["Observation"]}
    assert set(observations) == {"wai-sr-total", "wai-sr-task-sum", "wai-sr-bond-sum", "wai-sr-goal-sum"}
    assert observations["wai-sr-total"]["valueQuantity"]["value"] == 48
    bond = observations["wai-sr-bond-sum"]
    assert bond["valueQuantity"]["value"] == 16
    assert {c["code"]["coding"][0]["code"]: c.get("valueQuantity", {}).get("value") for c in bond["component"]}[
        "wai-sr-bond-mean"
    ] == 4.0
    assert active_flags(client, uid) == []
    # Bond items (3, 5, 7, 9) fall to 3: bond mean 3.00, a drop of 1.00 >= 0.5
    submit(client, _wai(uid, {3: "3", 5: "3", 7: "3", 9: "3"}, "2026-10-01T10:00:00Z"))
    assert active_flags(client, uid) == ["wai-sr-subscale-drop"]
    flag = client.get("/Flag", params={"patient": uid, "status": "active"}).json()["entry"][0]["resource"]
    assert "Bond 4 → 3" in flag["code"]["text"] and "-mean" not in flag["code"]["text"]
    details = [e["valueReference"]["reference"] for e in flag["extension"] if e["url"].endswith("/flag-detail")]
    assert len(details) == 1  # the Observation holding the subscale that fell: the Bond sum with its mean
    assert client.get(f"/{details[0]}").json()["code"]["coding"][0]["code"] == "wai-sr-bond-sum"


def _ors(patient: str, mark: int, authored: str) -> dict:
    """A self-reported ORS with every item marked ``mark`` mm (total = 4 x mark / 10)."""
    items = [
        {"linkId": n, "answer": [{"valueInteger": mark}]}
        for n in ("individually", "interpersonally", "socially", "overall")
    ]
    respondent = {
        "linkId": "respondent",
        "answer": [{"valueCoding": {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-respondent", "code": "self"}}],
    }
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": authored,
        "item": [respondent, *items],
    }


def test_ors_intake_above_the_cutoff_is_a_conversation_prompt_only_at_intake(client, uid):
    submit(client, _ors(uid, 80, "2026-09-01T10:00:00Z"))  # 32.0 at intake, adult cutoff 25
    assert active_flags(client, uid) == ["ors-intake-above-cutoff"]
    submit(client, _ors(uid, 80, "2026-09-08T10:00:00Z"))  # not the intake any more: closed, not raised again
    assert active_flags(client, uid) == []
    submit(client, _ors(uid, 55, "2026-09-15T10:00:00Z"))  # 22.0: below 25 and 10 below intake
    assert active_flags(client, uid) == ["ors-below-cutoff", "ors-deterioration"]


def test_intake_is_the_first_session_however_many_came_after(client, uid):
    """Reliable change is measured from intake: with 24 sessions on record, intake is still the first one, not the
    oldest of the few newest the pipeline reads for its windowed rules."""

    def ors(total: int, week: int) -> dict:
        return _ors(uid, int(total * 10 / 4), f"2026-{1 + week // 4:02d}-{1 + week % 4 * 7:02d}T10:00:00Z")

    submit(client, ors(20, 0))  # intake: 20.0
    for week in range(1, 24):
        submit(client, ors(26, week))  # 23 sessions at 26.0: +6 since intake, every one of them
    latest = client.get("/Observation", params={"patient": uid, "_sort": "-date", "_count": "1"}).json()["entry"][0]
    assert "Reliable improvement since intake (+6)" in [i["text"] for i in latest["resource"]["interpretation"]]
    submit(client, ors(16, 24))  # 16.0: 4 below intake (not reliable), though 10 below the sessions before it
    latest = client.get("/Observation", params={"patient": uid, "_sort": "-date", "_count": "1"}).json()["entry"][0]
    assert not any("since intake" in i["text"] for i in latest["resource"].get("interpretation", []))
    assert "ors-deterioration" not in active_flags(client, uid)


def test_change_from_intake_is_coded_so_that_reports_can_count_it(client, uid):
    """HL7's B and W cannot tell reliable improvement from clinically significant change; fit-interpretation codes
    can, and Observation?interpretation finds them (terminology/codesystem-fit-interpretation.json)."""
    fit = "http://fit-fhir.org/fhir/CodeSystem/fit-interpretation"
    submit(client, _ors(uid, 50, "2026-09-01T10:00:00Z"))  # 20.0 at intake: in the clinical range (below 25)
    submit(client, _ors(uid, 68, "2026-09-08T10:00:00Z"))  # 27.2: +7.2, and out of the clinical range
    submit(client, _ors(uid, 35, "2026-09-15T10:00:00Z"))  # 14.0: -6 since intake

    def dates(code: str) -> list[str]:
        found = client.get("/Observation", params={"patient": uid, "interpretation": f"{fit}|{code}"}).json()
        return sorted(e["resource"]["effectiveDateTime"][:10] for e in found.get("entry", []))

    assert dates("reliable-improvement") == ["2026-09-08"]
    assert dates("clinically-significant-improvement") == ["2026-09-08"]
    assert dates("reliable-deterioration") == ["2026-09-15"]
    below = client.get("/Observation", params={"patient": uid, "interpretation": "L"}).json()
    assert sorted(e["resource"]["effectiveDateTime"][:10] for e in below["entry"]) == ["2026-09-01", "2026-09-15"]

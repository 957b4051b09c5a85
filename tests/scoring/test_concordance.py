"""The therapist's rating beside the client's (issue 21; scoring/concordance.py), session by session through the API
on both databases: exactly the gap Observations and Flags each sequence must leave — client first or therapist
first, one of the two missing, an amended rating, a re-rating, a rating entered in error, another session."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import httpx

from fhir_server.validation import validate_resource
from tests.api.fhir import put
from tests.scoring.test_pipeline import srs, submit

THERAPIST = "http://fit-fhir.org/fhir/Questionnaire/srs-therapist|1.0.1"
SERIES = "http://fit-fhir.org/fhir/StructureDefinition/respondent-series"
DOMAINS = ("relationship", "goals", "approach", "overall")


def therapist(patient: str, marks: tuple[int, int, int, int], authored: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": THERAPIST,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{patient}-visit"},
        "author": {"reference": f"Practitioner/{patient}-therapist"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(DOMAINS, marks, strict=True)],
        **extra,
    }


def gaps(client: httpx.Client, patient: str) -> list[dict[str, Any]]:
    found = client.get("/Observation", params={"subject": f"Patient/{patient}", "code": "srs-gap-total"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def gap_flags(client: httpx.Client, patient: str) -> list[dict[str, Any]]:
    found = client.get("/Flag", params={"patient": patient, "code": "therapist-overestimated"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def by_domain(gap: dict[str, Any]) -> dict[str, float]:
    return {
        c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in gap["component"] if "valueQuantity" in c
    }


def test_client_first_then_therapist_writes_one_gap_and_no_flag_within_the_margins(client, uid):
    client_rating = submit(client, srs(uid, (90, 90, 90, 90), "2026-11-02T10:50:00+00:00"))  # 36.0
    assert gaps(client, uid) == []  # one of the two: nothing to compare yet
    rating = submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))  # 38.0
    [gap] = gaps(client, uid)
    validate_resource(gap)
    assert gap["status"] == "final" and gap["valueQuantity"]["value"] == 2.0
    assert by_domain(gap) == {f"srs-gap-{d}": 0.5 for d in DOMAINS}
    assert {d["reference"] for d in gap["derivedFrom"]} == {
        f"QuestionnaireResponse/{client_rating['id']}",
        f"QuestionnaireResponse/{rating['id']}",
    }
    assert gap["encounter"] == {"reference": f"Encounter/{uid}-visit"}
    assert gap["performer"] == [{"reference": f"Practitioner/{uid}-therapist"}]
    assert gap_flags(client, uid) == []


def test_therapist_first_then_client_raises_the_flag_naming_the_domain(client, uid):
    submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))  # 38.0
    assert gaps(client, uid) == []
    submit(client, srs(uid, (90, 60, 90, 90), "2026-11-02T10:50:00+00:00"))  # 33.0: Goals 3.5 lower
    [gap] = gaps(client, uid)
    assert gap["valueQuantity"]["value"] == 5.0 and by_domain(gap)["srs-gap-goals"] == 3.5
    [flag] = gap_flags(client, uid)
    validate_resource(flag)
    assert flag["status"] == "active"
    assert flag["code"]["text"] == (
        "You rated today's session 38, your client 33. Your client rated Goals and Topics lower than you expected: "
        "what might you have missed?"
    )
    assert {"url": SERIES, "valueString": "clinician"} in flag["extension"]
    # the therapist's own rating is in its own series: it raised none of the client's SRS Flags
    active = client.get("/Flag", params={"patient": uid, "status": "active"}).json()["entry"]
    assert sorted(e["resource"]["code"]["coding"][0]["code"] for e in active) == [
        "srs-below-cutoff",
        "srs-item-checkin",
        "therapist-overestimated",
    ]


def test_the_total_margin_alone_raises_it_for_the_session_as_a_whole(client, uid):
    submit(client, srs(uid, (85, 85, 85, 85), "2026-11-02T10:50:00+00:00"))  # 34.0
    submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))  # 38.0: +4 total, +1 each
    [flag] = gap_flags(client, uid)
    assert flag["code"]["text"] == (
        "You rated today's session 38, your client 34. Your client rated today's session lower than you expected: "
        "what might you have missed?"
    )


def test_one_rating_alone_or_another_session_makes_no_gap(client, uid):
    submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))
    other = srs(uid, (10, 10, 10, 10), "2026-11-09T10:50:00+00:00", encounter={"reference": f"Encounter/{uid}-next"})
    submit(client, other)
    no_encounter = srs(uid, (10, 10, 10, 10), "2026-11-16T10:50:00+00:00")
    del no_encounter["encounter"]
    submit(client, no_encounter)
    assert gaps(client, uid) == [] and gap_flags(client, uid) == []


def test_an_amended_rating_restates_the_gap_and_ends_the_flag(client, uid):
    first = submit(client, srs(uid, (90, 60, 90, 90), "2026-11-02T10:50:00+00:00"))
    submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))
    [flag] = gap_flags(client, uid)
    assert flag["status"] == "active"
    amended = {**first, "status": "amended", "item": srs(uid, (95, 90, 95, 95), first["authored"])["item"]}
    assert put(client, f"/QuestionnaireResponse/{first['id']}", amended).status_code == 200
    [gap] = gaps(client, uid)
    assert gap["status"] == "amended" and gap["valueQuantity"]["value"] == 0.5
    [flag] = gap_flags(client, uid)
    assert flag["status"] == "inactive"


def test_a_second_rating_of_the_session_replaces_the_gap(client, uid):
    submit(client, srs(uid, (90, 90, 90, 90), "2026-11-02T10:50:00+00:00"))
    submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))
    again = submit(client, therapist(uid, (90, 90, 90, 90), "2026-11-02T11:05:00+00:00"))
    [gap] = gaps(client, uid)
    assert gap["valueQuantity"]["value"] == 0.0
    assert f"QuestionnaireResponse/{again['id']}" in [d["reference"] for d in gap["derivedFrom"]]


def test_a_rating_entered_in_error_voids_the_gap_and_its_flag(client, uid):
    submit(client, srs(uid, (90, 60, 90, 90), "2026-11-02T10:50:00+00:00"))
    rating = submit(client, therapist(uid, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00"))
    void = {**rating, "status": "entered-in-error"}
    assert put(client, f"/QuestionnaireResponse/{rating['id']}", void).status_code == 200
    [gap] = gaps(client, uid)
    [flag] = gap_flags(client, uid)
    assert gap["status"] == flag["status"] == "entered-in-error"


def test_two_ratings_of_one_session_arriving_together_make_its_gap(server, uid):
    """The client's and the therapist's rating of one session submitted at the same moment, session after session:
    whichever transaction commits second sees the first (the lock its read of the session takes), so no session
    is left unpaired."""
    sessions = [f"{uid}-{n}" for n in range(12)]
    with (
        httpx.Client(base_url=server.fhir_base, timeout=30) as one,
        httpx.Client(base_url=server.fhir_base, timeout=30) as other,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        for patient in sessions:
            start = Barrier(2)

            def send(client: httpx.Client, response: dict[str, Any], start: Barrier = start) -> dict[str, Any]:
                start.wait()
                return submit(client, response)

            rated = [
                pool.submit(send, one, srs(patient, (90, 60, 90, 90), "2026-11-02T10:50:00+00:00")),
                pool.submit(send, other, therapist(patient, (95, 95, 95, 95), "2026-11-02T10:55:00+00:00")),
            ]
            for future in rated:
                future.result()
        assert [len(gaps(one, patient)) for patient in sessions] == [1] * len(sessions)
        assert [len(gap_flags(one, patient)) for patient in sessions] == [1] * len(sessions)

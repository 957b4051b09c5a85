"""Write-back of the therapist's rating and of the gap it makes with the client's (issue 21, point 5): the client's
SRS, then the therapist's rating of the same session; each delivery reaches the EHR exactly once, the second with
the gap Observation and the therapist-overestimated Flag among its results.  The EHR is a second instance of this
server in its own process (tests/ehr/harness.py), reached through the fault proxy."""

from __future__ import annotations

from tests.ehr.world import LAUNCH, LOW, in_ehr_once, new_patient, srs, submit, wait_for
from tests.scoring.test_concordance import THERAPIST

DOMAINS = ("relationship", "goals", "approach", "overall")


def therapist(patient: str, encounter: str, authored: str, launch: str) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": LAUNCH, "value": launch},
        "questionnaire": THERAPIST,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "author": {"reference": "Practitioner/the-therapist"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": 98}]} for n in DOMAINS],
    }


def test_the_gap_and_its_flag_reach_the_ehr_once_with_the_second_rating(ours, ehr, local, proxy, registration, uid):
    proxy.plan(hide_transaction=False)
    patient, encounter = new_patient(ehr, uid)
    client_rating = submit(local, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:50:00Z", f"{uid}-c"))
    wait_for(local, client_rating, "in the EHR")
    rating = submit(local, registration.id, therapist(patient, encounter, "2026-11-02T10:55:00Z", f"{uid}-t"))
    wait_for(local, rating, "in the EHR")
    found = in_ehr_once(ehr, local, rating)
    codes = sorted(r["code"]["coding"][0]["code"] for k, r in found.items() if k.startswith(("Observation/", "Flag/")))
    assert codes == ["srs-gap-total", "therapist-overestimated", "tsrs-total"]
    gap = next(r for r in found.values() if r.get("code", {}).get("coding", [{}])[0].get("code") == "srs-gap-total")
    assert gap["valueQuantity"]["value"] == 5.1  # 39.2 - 34.1

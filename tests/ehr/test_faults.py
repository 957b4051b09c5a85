"""Write-back under EHR faults (issue 7, acceptance: "the EHR answers 503, 429 with Retry-After, hangs, or is down
for a while during delivery — after it recovers every result is in the EHR exactly once"; "a retried delivery
produces no duplicates").  Faults come from the proxy process between our server and the EHR; what happened is
read from the proxy's log, never from timings on our side.
"""

from __future__ import annotations

import pytest

from tests.ehr.world import LOW, in_ehr_once, new_patient, rows_for, srs, submit, wait_for

WRITES = {"method": "POST", "path": "/fhir"}  # transactions, and creates in the one-by-one mode


def _deliver(ehr, local, registration, uid: str) -> str:
    patient, encounter = new_patient(ehr, uid)
    response_id = submit(local, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", uid))
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)
    return response_id


def _writes(proxy) -> list[dict]:
    return [r for r in proxy.requests() if r["method"] in ("POST", "PUT") and r["path"].startswith("/fhir")]


def test_503_twice_then_the_ehr_recovers(ours, ehr, local, proxy, registration, uid):
    proxy.plan({"action": "status", "status": 503, "count": 2, **WRITES})
    response_id = _deliver(ehr, local, registration, uid)
    assert [r["status"] for r in _writes(proxy)] == [503, 503, 200]
    [row] = rows_for(local, response_id)
    assert row.status == "delivered" and row.attempts == 3 and row.last_error is None
    # Our server logged the retries and the delivery, and nothing of the patient or of any token.
    log = ours.log.read_text()
    assert f'"outbox_row":{row.id}' in log and "will be retried" in log
    assert uid not in log and "eyJ" not in log and "Bearer" not in log


@pytest.mark.parametrize("form", ["retry_after", "retry_after_date"])
def test_retry_after_is_honoured_for_every_request_to_that_ehr(form, ours, ehr, local, proxy, registration, uid):
    """429 with ``Retry-After: 2`` (seconds), and 503 with ``Retry-After`` as an HTTP-date 2 s ahead: no request
    of any kind reaches the EHR before the time it named."""
    status = 429 if form == "retry_after" else 503
    proxy.plan({"action": "status", "status": status, form: 2, **WRITES})
    response_id = _deliver(ehr, local, registration, uid)
    requests = proxy.requests()
    [refused] = [i for i, r in enumerate(requests) if r.get("status") == status]
    not_before = requests[refused]["not_before"]
    later = requests[refused + 1 :]
    assert later, "nothing was sent after the refusal"
    assert all(r["t"] >= not_before for r in later), [round(r["t"] - not_before, 3) for r in later]
    assert rows_for(local, response_id)[0].attempts == 2


def test_a_hang_past_our_timeout_then_recovery(ours, ehr, local, proxy, registration, uid):
    proxy.plan({"action": "hang", "seconds": 4, **WRITES})  # our timeout is 1.5 s
    response_id = _deliver(ehr, local, registration, uid)
    writes = _writes(proxy)
    assert [w["action"] for w in writes] == ["hang", "forward"]
    [row] = rows_for(local, response_id)
    assert row.attempts == 2


def test_the_ehr_down_for_a_while_then_back(ours, ehr, local, proxy, registration, uid):
    proxy.down(3)  # connections refused for 3 s
    response_id = _deliver(ehr, local, registration, uid)
    requests = proxy.requests()
    up = next(r["t"] for r in requests if r["action"] == "up")
    assert all(r["t"] >= up for r in requests if r["method"] != "-")  # nothing got through while it was down
    assert rows_for(local, response_id)[0].attempts >= 2  # at least one attempt was refused


@pytest.mark.parametrize("hide_transaction", [False, True], ids=["transaction", "one request per resource"])
def test_a_lost_answer_is_retried_without_a_duplicate(hide_transaction, ours, ehr, local, proxy, registration, uid):
    """The EHR stores the write but its answer never arrives: the retry's conditional writes match what the lost
    attempt stored.  In the one-by-one mode the answer to the Observation is lost, half-way through the row."""
    path = "/fhir/Observation" if hide_transaction else "/fhir"
    proxy.plan({"action": "drop", "method": "POST", "path": path}, hide_transaction=hide_transaction)
    response_id = _deliver(ehr, local, registration, uid)
    writes = _writes(proxy)
    [dropped] = [w for w in writes if w["action"] == "drop"]
    assert dropped["status"] == 201 if hide_transaction else dropped["status"] == 200  # the EHR did store it
    retried = [w for w in writes if w["path"] == path and w["action"] == "forward"]
    assert [w["status"] for w in retried] == [200]  # matched, not created again
    assert rows_for(local, response_id)[0].attempts == 2


@pytest.mark.parametrize("lost", ["Observation", "Provenance"])
def test_an_ehr_without_conditional_writes_gets_search_then_write(lost, ours, ehr, local, proxy, registration, uid):
    """An EHR whose CapabilityStatement offers no transaction and no conditional create or update (as many do):
    every write is preceded by a search for its key, so when the answer to a create is lost the retry finds the
    copy and writes nothing twice.  Provenance, which has no identifier in R4, is found by its write-back tag."""
    lose_answer = {"action": "drop", "method": "POST", "path": f"/fhir/{lost}"}
    proxy.plan(lose_answer, hide_transaction=True, hide_conditional=True)
    response_id = _deliver(ehr, local, registration, uid)  # asserts every resource is in the EHR exactly once
    requests = proxy.requests()
    assert not any("if_none_exist" in r for r in requests)  # never a conditional create the EHR did not offer
    assert not any(r["method"] == "PUT" and "?" in r["path"] for r in requests)  # nor a conditional update
    creates = [r for r in requests if r["method"] == "POST" and r["path"] == f"/fhir/{lost}"]
    assert [c["action"] for c in creates] == ["drop"]  # created once; the retry found it and did not post again
    searches = [r for r in requests if r["method"] == "GET" and r["path"].startswith(f"/fhir/{lost}?")]
    assert len(searches) == 2  # one per attempt, each before any write of it
    key = "_tag=" if lost == "Provenance" else "identifier="
    assert all(key in s["path"] for s in searches)
    assert rows_for(local, response_id)[0].attempts == 2

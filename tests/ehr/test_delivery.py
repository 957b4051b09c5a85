"""Write-back (issue 7, point 4): a scored SRS submission reaches the EHR exactly once — QuestionnaireResponse,
Observations, Flags and Provenance — as a transaction Bundle where the EHR's CapabilityStatement offers
transactions, else one conditional request per resource; a Flag the next session closes is closed in the EHR
too; the EHR's rate cap holds.  The EHR is a second instance of this server (own process, own database,
authorization required) reached through the fault proxy; our server authenticates as a Backend Services client.
"""

from __future__ import annotations

import pytest

from fhir_server.ehr import outbox, registry
from fhir_server.ehr.payload import RESPONSE_IDENTIFIER, WRITE_BACK_TAG
from fhir_server.scoring.resources import derived_id
from tests.ehr.world import HIGH, LOW, in_ehr_once, local_results, new_patient, rows_for, srs, submit, wait_for

MODES = {"transaction": False, "one request per resource": True}


@pytest.mark.parametrize("mode", MODES)
def test_a_scored_srs_and_the_flag_it_closes_later_reach_the_ehr_once(mode, ours, ehr, local, proxy, registration, uid):
    proxy.plan(hide_transaction=MODES[mode])
    patient, encounter = new_patient(ehr, uid)
    first = submit(local, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", f"{uid}-1"))
    assert outbox.delivery_state(local.state.engine, first) in ("pending", "in the EHR")
    wait_for(local, first, "in the EHR")
    found = in_ehr_once(ehr, local, first)
    flags = sorted(f["code"]["coding"][0]["code"] for k, f in found.items() if k.startswith("Flag/"))
    assert flags == ["srs-below-cutoff", "srs-item-checkin"]
    _nothing_but_what_was_sent(ehr, patient, found)
    assert all(f["status"] == "active" for k, f in found.items() if k.startswith("Flag/"))

    # The next session scores high: scoring closes both Flags here, and the delivery closes them in the EHR.
    second = submit(local, registration.id, srs(patient, encounter, HIGH, "2026-11-09T10:00:00+00:00", f"{uid}-2"))
    wait_for(local, second, "in the EHR")
    found_second = in_ehr_once(ehr, local, second)
    closed = {k: f for k, f in found_second.items() if k.startswith("Flag/")}
    assert set(closed) == {k for k in found if k.startswith("Flag/")}  # the first session's Flags, no new ones
    assert all(f["status"] == "inactive" for f in closed.values())
    assert {f["id"] for f in closed.values()} == {f["id"] for k, f in found.items() if k.startswith("Flag/")}

    requests = proxy.requests()
    # a Backend Services token from the EHR's token endpoint, once (cached), before the first write
    tokens = [i for i, r in enumerate(requests) if r["method"] == "POST" and r["path"].endswith("/token")]
    assert len(tokens) == 1 and requests[tokens[0]]["status"] == 200
    sent = [r for r in requests if r["method"] in ("POST", "PUT") and r["path"].startswith("/fhir")]
    if mode == "transaction":
        assert [r["path"] for r in sent] == ["/fhir", "/fhir"]
    else:
        # first: QR, Observation, 2 Flags, Provenance created; second: QR, Observation, Provenance created and the
        # two closed Flags updated (PUT Flag?identifier=…)
        assert len(sent) == 5 + 5
        assert sum(r["method"] == "PUT" and r["path"].startswith("/fhir/Flag?identifier=") for r in sent) == 2
    assert all(r["status"] in (200, 201) for r in sent)


def _nothing_but_what_was_sent(ehr, patient: str, found: dict) -> None:
    """The EHR (itself a fhir-server) did not score the response it received again (issue 17, finding 6): the
    patient's Observations and Flags there, and the response's Provenance, are exactly the ones sent."""
    [response] = [f for k, f in found.items() if k.startswith("QuestionnaireResponse/")]
    with ehr.client() as client:
        for kind, params in (
            ("Observation", {"subject": f"Patient/{patient}"}),
            ("Flag", {"subject": f"Patient/{patient}"}),
            ("Provenance", {"entity": f"QuestionnaireResponse/{response['id']}"}),
        ):
            there = client.get(f"/{kind}", params={**params, "_count": "100"}).json().get("entry", [])
            sent = {f["id"] for k, f in found.items() if k.startswith(f"{kind}/")}
            assert {e["resource"]["id"] for e in there} == sent, kind


def test_one_row_per_pending_delivery_and_nothing_queued_when_the_submission_fails(local, registration, uid):
    response = srs("p", "e", HIGH, "2026-11-02T10:00:00+00:00", uid)
    fhir = local.state.fhir

    def twice(session):
        written = fhir.create(session, "QuestionnaireResponse", response)
        ref = f"QuestionnaireResponse/{written.stored.id}"
        return (
            written.stored.id,
            outbox.enqueue(session, registration.id, ref, "launch-1"),
            outbox.enqueue(session, registration.id, ref, "launch-1"),
        )

    response_id, row, again = fhir.repo.write(twice)
    assert row == again and len(rows_for(local, response_id)) == 1
    assert rows_for(local, response_id)[0].token_ref == "launch-1"

    class Refused(Exception):
        pass

    def fails_after_queuing(session):
        written = fhir.create(session, "QuestionnaireResponse", srs("p", "e", HIGH, "2026-11-02T10:00:00Z", uid + "x"))
        outbox.enqueue(session, registration.id, f"QuestionnaireResponse/{written.stored.id}", None)
        raise Refused(written.stored.id)

    with pytest.raises(Refused) as refused:
        fhir.repo.write(fails_after_queuing)
    assert rows_for(local, str(refused.value)) == []  # rolled back with the response
    assert outbox.delivery_state(local.state.engine, str(refused.value)) is None


def test_enqueue_refuses_what_it_cannot_deliver(local, registration):
    fhir = local.state.fhir
    cases = {
        "no EHR is registered with id 999999": (999999, "QuestionnaireResponse/x1"),
        "starts from a QuestionnaireResponse reference": (registration.id, "Observation/x1"),
        "is not a valid resource id": (registration.id, "QuestionnaireResponse/bad id"),
        "is not stored": (registration.id, "QuestionnaireResponse/never-written"),
    }
    for message, (ehr_id, reference) in cases.items():
        with pytest.raises(outbox.OutboxError, match=message):
            fhir.repo.write(lambda s, e=ehr_id, r=reference: outbox.enqueue(s, e, r, None))


def test_the_rate_cap_spaces_requests_to_one_ehr(ours, ehr, local, proxy, backend, uid):
    ehr_reg = registry.register(
        local.state.engine,
        issuer=proxy.fhir_base,
        client_id="fit-app",
        backend_client_id=f"fit-outbox-{backend}",
        max_requests_per_second=4,
    )
    proxy.plan(hide_transaction=True)  # one request per resource: several requests per delivery
    patient, encounter = new_patient(ehr, uid)
    response_id = submit(local, ehr_reg.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", uid))
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)
    times = [r["t"] for r in proxy.requests()]  # metadata, discovery, token, then the resources
    assert len(times) >= 8
    # Starts are spaced 1/4 s apart.  Arrival at the proxy can lag a start (the first one opens the connection, and
    # the proxy is another process on a busy machine): 0.2 s of slack, where uncapped requests would take ~0.2 s
    # in all.
    assert times[-1] - times[0] >= (len(times) - 1) / 4 - 0.2
    assert len(local_results(local, response_id)) == 4  # Observation, 2 Flags, Provenance


def test_only_the_types_the_ehr_takes_and_logical_references_to_the_rest(ours, ehr, local, proxy, backend, uid):
    """An EHR registered for Observations and Flags only: those arrive, refer to the response by identifier (one is
    given to a response submitted without), and nothing else is written there."""
    ehr_reg = registry.register(
        local.state.engine,
        issuer=proxy.fhir_base,
        client_id="fit-app",
        backend_client_id=f"fit-outbox-{backend}",
        resource_types=["Observation", "Flag"],
    )
    patient, encounter = new_patient(ehr, uid)
    response = srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", uid)
    del response["identifier"]
    response_id = submit(local, ehr_reg.id, response)
    wait_for(local, response_id, "in the EHR")
    with ehr.client() as client:
        observations = client.get("/Observation", params={"subject": f"Patient/{patient}"}).json()["entry"]
        flags = client.get("/Flag", params={"patient": patient}).json()["entry"]
        provenance_tag = f"{WRITE_BACK_TAG}|Provenance/{derived_id(response_id, 'scoring')}"
        assert client.get("/Provenance", params={"_tag": provenance_tag}).json().get("entry", []) == []
        by_key = {"identifier": f"{RESPONSE_IDENTIFIER}|{response_id}"}
        assert client.get("/QuestionnaireResponse", params=by_key).json().get("entry", []) == []
    [observation] = [e["resource"] for e in observations]
    assert observation["derivedFrom"] == [
        {"type": "QuestionnaireResponse", "identifier": {"system": RESPONSE_IDENTIFIER, "value": response_id}}
    ]
    assert len(flags) == 2
    for flag in (e["resource"] for e in flags):
        detail = next(x for x in flag["extension"] if x["url"].endswith("flag-detail"))
        assert detail["valueReference"] == {"reference": f"Observation/{observation['id']}"}

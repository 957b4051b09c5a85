"""$evaluate-measure's parameters (R4): every malformed request is a clear OperationOutcome, never a 500; what R4
leaves to the server is answered as documented (a collection Bundle of every indicator at type level)."""

from __future__ import annotations

import pytest

from tests.api.fhir import assert_outcome, post

PERIOD = {"periodStart": "2026-01", "periodEnd": "2026-03"}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "required"),
        ({"periodStart": "2026-01"}, 400, "required"),
        ({"periodStart": "January", "periodEnd": "2026-03"}, 400, "invalid"),
        ({"periodStart": "2026-04", "periodEnd": "2026-03"}, 400, "invalid"),
        ({**PERIOD, "reportType": "subject"}, 400, "not-supported"),
        ({**PERIOD, "reportType": "individual"}, 400, "not-supported"),
        ({**PERIOD, "subject": "Patient/1"}, 400, "not-supported"),
        ({**PERIOD, "subject": "Observation/1"}, 400, "invalid"),
        ({**PERIOD, "subject": "Organization/"}, 400, "invalid"),
        ({**PERIOD, "subject": "Organization/1", "practitioner": "Practitioner/2"}, 400, "invalid"),
        ({**PERIOD, "periodStart": ["2026-01", "2026-02"]}, 400, "invalid"),
        ({**PERIOD, "measure": "no-such-indicator"}, 404, "not-found"),
    ],
)
def test_bad_parameters_are_clear_outcomes(client, params, status, code):
    assert_outcome(client.get("/Measure/$evaluate-measure", params=params), status, code)


def test_a_measure_that_is_not_an_indicator_cannot_be_evaluated(client, uid):
    measure = {"resourceType": "Measure", "status": "draft", "url": f"http://example.org/Measure/{uid}"}
    created = post(client, "/Measure", measure)
    assert created.status_code == 201, created.text
    answer = client.get(f"/Measure/{created.json()['id']}/$evaluate-measure", params=PERIOD)
    assert_outcome(answer, 422, "not-supported")
    assert_outcome(client.get("/Measure/no-such-id/$evaluate-measure", params=PERIOD), 404, "not-found")


def test_every_indicator_at_once_and_one_by_each_of_its_names(client):
    everything = client.get("/Measure/$evaluate-measure", params=PERIOD).json()
    assert everything["resourceType"] == "Bundle" and everything["type"] == "collection"
    measures = sorted(e["resource"]["measure"].split("/")[-1] for e in everything["entry"])
    assert measures == sorted(
        f"{name}|1.0.0"
        for name in ("concern-followed-up", "early-dropout", "ors-change", "ors-reliable-change", "srs-below-cutoff",
                     "srs-ceiling", "srs-completion", "srs-mean", "therapist-gap", "wai-sr-subscales")
    )  # fmt: skip
    url = "http://fit-fhir.org/fhir/Measure/srs-mean"
    for name in ("srs-mean", url, f"{url}|1.0.0", "Measure/srs-mean"):
        report = client.get("/Measure/$evaluate-measure", params={**PERIOD, "measure": name}).json()
        assert report["resourceType"] == "MeasureReport" and report["measure"] == f"{url}|1.0.0", name
    by_instance = client.get("/Measure/srs-mean-1.0.0/$evaluate-measure", params=PERIOD).json()
    assert by_instance["measure"] == f"{url}|1.0.0" and by_instance["period"] == {"start": "2026-01", "end": "2026-03"}
    posted = client.post(
        "/Measure/srs-mean-1.0.0/$evaluate-measure",
        json={"resourceType": "Parameters", "parameter": [{"name": "periodStart", "valueDate": "2026-01-01"},
                                                           {"name": "periodEnd", "valueDate": "2026-03-31"}]},
        headers={"Content-Type": "application/fhir+json"},
    )  # fmt: skip
    assert posted.status_code == 200 and posted.json()["period"] == {"start": "2026-01-01", "end": "2026-03-31"}

"""Who may run supervisors' reports (issue 20, point 5; reporting/access.py): a supervisor of program A gets
nothing of program B, a supervisor of the organisation gets both, a user who supervises nothing and a patient get
403, a Backend Services client every program; naming clients (subject-list) needs patient access too; every run
is audited without naming a client; a report can be stored as a MeasureReport."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_server.auth import admin as accounts
from fhir_server.validation import validate_resource
from tests.api.fhir import assert_outcome, post
from tests.reporting.practice import Practice, counts
from tests.support.access_data import admin
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

LOW, HIGH = (80, 80, 80, 80), (95, 95, 95, 95)
PERIOD = {"periodStart": "2026-01", "periodEnd": "2026-06"}


@pytest.fixture(scope="module")
def practice(guarded: RunningServer) -> Iterator[Practice]:
    with admin(guarded) as client:
        p = Practice(client, uuid.uuid4().hex[:12])
        a1, a2, b1 = p.patient("a1", "1980-01-01"), p.patient("a2", "1981-01-01"), p.patient("b1", "1982-01-01")
        p.session(a1, "2026-02-02", p.ca, p.program_a, srs=LOW)  # below the cutoff
        p.session(a2, "2026-02-03", p.ca, p.program_a, srs=HIGH)
        p.session(b1, "2026-02-04", p.cb, p.program_b, srs=LOW)
        yield p


def add_supervisor(server: RunningServer, organizations: list[str]) -> tuple[str, str]:
    """A user of this server who supervises ``organizations``: their ``sub`` and fhirUser."""
    name = f"sup-{uuid.uuid4().hex[:8]}"
    practitioner = f"Practitioner/{name}"
    user_id = accounts.add_user(
        server.app.state.engine, name, "a-long-password", practitioner, may_pick_patient=False,
        supervises=organizations,
    )  # fmt: skip
    return user_id, practitioner


def supervisor(server: RunningServer, organizations: list[str], scope: str = "user/MeasureReport.r") -> str:
    """An access token of a new user who supervises ``organizations``."""
    user_id, practitioner = add_supervisor(server, organizations)
    return mint(server, f"openid fhirUser {scope}", sub=user_id, fhirUser=practitioner, client_id="supervision")


def below_cutoff(server: RunningServer, token: str, **params: str) -> Any:
    with client_for(server, token) as c:
        return c.get("/Measure/$evaluate-measure", params={"measure": "srs-below-cutoff", **PERIOD, **params})


def test_a_supervisor_of_one_program_sees_only_that_program(guarded, practice):
    token = supervisor(guarded, [practice.program_a])
    answer = below_cutoff(guarded, token)  # no subject: every program the user supervises
    assert answer.status_code == 200, answer.text
    found = answer.json()["group"][0]
    programs = {s["value"]["text"] for s in found["stratifier"][0]["stratum"]}
    assert programs == {practice.program_a}  # nothing of B, nor of any other test's programs
    assert (counts(found)["denominator"], counts(found)["numerator"]) == (2, 1)
    assert_outcome(below_cutoff(guarded, token, subject=practice.program_b), 403, "forbidden")
    assert_outcome(below_cutoff(guarded, token, subject=practice.org), 403, "forbidden")  # the parent: not theirs
    narrowed = below_cutoff(guarded, token, subject=practice.ca)  # a clinician: within the supervised programs
    assert counts(narrowed.json()["group"][0])["denominator"] == 2


def test_a_supervisor_of_the_organisation_sees_its_programs(guarded, practice):
    token = supervisor(guarded, [practice.org])
    found = below_cutoff(guarded, token, subject=practice.org).json()["group"][0]
    assert (counts(found)["denominator"], counts(found)["numerator"]) == (3, 2)
    alone = below_cutoff(guarded, token, subject=practice.program_b).json()["group"][0]
    assert (counts(alone)["denominator"], counts(alone)["numerator"]) == (1, 1)


def test_who_supervises_nothing_or_is_a_patient_gets_403(guarded, practice):
    outcome = assert_outcome(below_cutoff(guarded, supervisor(guarded, [])), 403, "forbidden")
    assert "--supervises" in outcome["issue"][0]["diagnostics"]
    patient = mint(guarded, "patient/*.rs launch/patient", patient=f"{practice.uid}-a1")
    assert_outcome(below_cutoff(guarded, patient), 403, "forbidden")
    # another issuer's user whose sub happens to be one of our supervisors' ids, with another fhirUser: nothing
    user_id, _ = add_supervisor(guarded, [practice.org])
    other = mint(guarded, "openid fhirUser user/MeasureReport.r", sub=user_id, fhirUser="Practitioner/someone-else")
    assert_outcome(below_cutoff(guarded, other), 403, "forbidden")


def test_a_backend_client_reports_on_every_program(guarded, practice):
    token = mint(guarded, "system/MeasureReport.r")
    found = below_cutoff(guarded, token, subject=practice.org).json()["group"][0]
    assert counts(found)["denominator"] == 3


def test_naming_clients_needs_patient_access(guarded, practice):
    token = supervisor(guarded, [practice.org])
    assert_outcome(below_cutoff(guarded, token, reportType="subject-list"), 403, "forbidden")
    both = supervisor(guarded, [practice.org], scope="user/MeasureReport.r user/Patient.r")
    report = below_cutoff(guarded, both, reportType="subject-list", subject=practice.org).json()
    assert report["type"] == "subject-list"
    named = {e["item"]["reference"] for item in report["contained"] for e in item["entry"]}
    assert named == {f"Patient/{practice.uid}-{k}" for k in ("a1", "a2", "b1")}


def test_every_run_is_audited_without_naming_clients(guarded, practice):
    token = supervisor(guarded, [practice.org])
    assert below_cutoff(guarded, token, subject=practice.org).status_code == 200
    deadline, found = time.monotonic() + 10, []
    with client_for(guarded, mint(guarded, "system/AuditEvent.rs")) as c:
        while not found and time.monotonic() < deadline:
            events = c.get("/AuditEvent", params={"_count": "200", "_sort": "-date"}).json().get("entry", [])
            found = [
                e["resource"] for e in events
                if practice.org in e["resource"].get("outcomeDesc", "") + str(e["resource"].get("entity", ""))
                and "$evaluate-measure" in str(e["resource"])
            ]  # fmt: skip
            time.sleep(0.1)
    assert found, "no AuditEvent for the report run"
    assert f"{practice.uid}-a1" not in str(found[0])  # names the report, never a client


def test_a_report_is_stored_for_history(guarded, practice):
    token = mint(guarded, "system/MeasureReport.crs")
    report = below_cutoff(guarded, token, subject=practice.org).json()
    validate_resource(report)
    with client_for(guarded, token) as c:
        stored = post(c, "/MeasureReport", report)
        assert stored.status_code == 201, stored.text
        found = c.get("/MeasureReport", params={"measure": report["measure"], "_count": "5"}).json()
    assert any(e["resource"]["id"] == stored.json()["id"] for e in found.get("entry", []))

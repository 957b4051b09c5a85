"""SDC's questionnaire-task pattern (SDC 3.0/4.0 sdc-task, invariant sdc-t1) and this server's fit-task-input
inputs, checked on create and update through the API on both databases (validation/sdc_task.py): each refusal is a
422 OperationOutcome whose expression names the element; a valid request is stored and read back unchanged; a Task
of another code is a plain R4 Task."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.validation.sdc_task import SDC_TASK_PROFILE, TASK_CODE_SYSTEM
from tests.api.fhir import post, put
from tests.measure_tasks.tasks_data import canonical, fit, registered_ehr, sdc_task


def _refused(response, code: str, expression: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == code, outcome
    assert issue["expression"] == [expression], outcome
    return outcome


def test_a_valid_request_is_stored_and_read_back_unchanged(server, client, uid):
    ors = canonical(server, "ors")
    task = sdc_task(uid, ors, meta={"profile": [SDC_TASK_PROFILE]})
    task["input"].append(fit("write-back", valueUrl=registered_ehr(server, uid)))
    created = post(client, "/Task", task)
    assert created.status_code == 201, created.text
    stored = client.get(f"/Task/{created.json()['id']}").json()
    mine = {k: v for k, v in stored.items() if k not in ("id", "meta")}
    assert mine == {k: v for k, v in task.items() if k != "meta"}
    assert stored["meta"]["profile"] == [SDC_TASK_PROFILE]


def test_the_version_may_be_left_out_of_the_canonical(server, client, uid):
    url = canonical(server, "srs").split("|")[0]
    assert post(client, "/Task", sdc_task(uid, url)).status_code == 201


def _without_questionnaire(task):
    task["input"] = task["input"][1:]


def _two_questionnaires(task):
    task["input"].append(copy.deepcopy(task["input"][0]))


def _unknown_fit_code(task):
    task["input"].append(fit("fax", valueString="x"))


def _value(**changes):
    def change(task):
        task.update(changes)

    return change


def _input(index: int, item):
    def change(task):
        task["input"][index] = item

    return change


CASES = {
    "no questionnaire input": (_without_questionnaire, "required", "Task.input"),
    "two questionnaire inputs": (_two_questionnaires, "structure", "Task.input[3]"),
    "a focus": (_value(focus={"reference": "ServiceRequest/x"}), "invariant", "Task.focus"),
    "for a Group": (_value(**{"for": {"reference": "Group/g"}}), "value", "Task.for"),
    "no for": (lambda t: t.pop("for"), "value", "Task.for"),
    "owned by another patient": (_value(owner={"reference": "Patient/someone-else"}), "value", "Task.owner"),
    "no requester": (lambda t: t.pop("requester"), "required", "Task.requester"),
    "no authoredOn": (lambda t: t.pop("authoredOn"), "required", "Task.authoredOn"),
    "expiry before authoredOn": (
        _value(restriction={"period": {"end": "2020-01-01"}}),
        "invariant",
        "Task.restriction.period.end",
    ),
    "an unknown fit-task-input code": (_unknown_fit_code, "code-invalid", "Task.input[3].type"),
    "delivery by fax": (
        _input(1, fit("delivery", valueContactPoint={"system": "fax", "value": "123"})),
        "value",
        "Task.input[1].valueContactPoint.system",
    ),
    "delivery to a malformed address": (
        _input(1, fit("delivery", valueContactPoint={"system": "email", "value": "not an address"})),
        "value",
        "Task.input[1].valueContactPoint.value",
    ),
    "delivery without a ContactPoint": (_input(1, fit("delivery", valueString="email")), "structure", "Task.input[1]"),
    "an invalid language tag": (_input(2, fit("language", valueCode="english!")), "value", "Task.input[2].valueCode"),
    "write-back to an unregistered EHR": (
        _input(2, fit("write-back", valueUrl="https://elsewhere.example/fhir")),
        "value",
        "Task.input[2].valueUrl",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_departure_from_the_pattern_is_refused_naming_the_element(server, client, uid, case):
    change, code, expression = CASES[case]
    task = sdc_task(uid, canonical(server, "ors"))
    change(task)
    _refused(post(client, "/Task", task), code, expression)


def test_a_questionnaire_this_server_does_not_hold_is_not_found(server, client, uid):
    task = sdc_task(uid, "http://example.org/Questionnaire/phq-9|1.0")
    outcome = _refused(post(client, "/Task", task), "not-found", "Task.input[0].valueCanonical")
    assert "not known" in outcome["issue"][0]["diagnostics"]
    other_version = canonical(server, "ors").split("|")[0] + "|0.0.1"
    _refused(post(client, "/Task", sdc_task(uid, other_version)), "not-found", "Task.input[0].valueCanonical")


def test_an_update_is_checked_too(server, client, uid):
    created = post(client, "/Task", sdc_task(uid, canonical(server, "ors"))).json()
    moved = {**created, "focus": {"reference": "ServiceRequest/x"}}
    _refused(put(client, f"/Task/{created['id']}", moved), "invariant", "Task.focus")


def test_a_closed_request_is_not_refused_for_what_changed_since(server, client, uid):
    """The Questionnaire and EHR look-ups judge open requests: a completed one stays the record it is."""
    task = sdc_task(uid, "http://example.org/Questionnaire/retired|1", status="completed")
    assert post(client, "/Task", task).status_code == 201


def test_a_task_claiming_the_profile_follows_sdc_t1_whatever_its_code(server, client, uid):
    fulfill = {
        **sdc_task(uid, canonical(server, "ors")),
        "meta": {"profile": [SDC_TASK_PROFILE]},
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": "Observation/x"},
    }
    _refused(post(client, "/Task", fulfill), "invariant", "Task.focus")
    fulfill["focus"] = {"reference": "ServiceRequest/x"}
    _refused(post(client, "/Task", fulfill), "invariant", "Task.input[0]")
    fulfill["input"] = fulfill["input"][1:]
    assert post(client, "/Task", fulfill).status_code == 201
    other = {**fulfill, "code": {"text": "call the client"}}
    _refused(post(client, "/Task", other), "invariant", "Task.code")


def test_a_plain_r4_task_is_validated_as_r4_only(client, uid):
    plain = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "approve"}]},
        "focus": {"reference": "Observation/x"},
        "for": {"reference": "Group/g"},
    }
    assert post(client, "/Task", plain).status_code == 201
    assert post(client, "/Task", {**plain, "status": "done"}).status_code == 400  # R4's required binding

"""A request's life (measure_tasks/): listed by ``Task?patient=…&status=…`` while open; completed by the response
that answers it (output questionnaire-response, executionPeriod.end) inside the caller's transaction, refused when
it is not open, another patient's or another Questionnaire's; every open request for the measure closed by a
response done in session; and cancelled by the expiry sweep once its expiry passed — once, whichever process
sweeps, the history showing each transition (both databases)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from fhir_server.measure_tasks.expiry import EXPIRED_TEXT, expire_due
from fhir_server.measure_tasks.tasks import MeasureTasks, TaskRefused
from fhir_server.validation.sdc_task import FIT_TASK_INPUT, SDC_TEMP
from tests.api.fhir import post
from tests.measure_tasks.tasks_data import at, canonical, expires, sdc_task
from tests.support.server import RunningServer

ROOT = Path(__file__).resolve().parents[2]
OPEN = "requested,received,accepted,in-progress"


def _ors_response(server: RunningServer, patient: str) -> dict:
    example = orjson.loads((ROOT / "questionnaires/ors/examples/valid-self-total-20-0.json").read_bytes())
    response = copy.deepcopy(example["response"])
    response["questionnaire"] = canonical(server, "ors")
    response["subject"] = {"reference": f"Patient/{patient}"}
    return response


def _create(client, task: dict) -> str:
    created = post(client, "/Task", task)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _respond(client, server, patient: str) -> str:
    stored = post(client, "/QuestionnaireResponse", _ors_response(server, patient))
    assert stored.status_code == 201, stored.text
    return f"QuestionnaireResponse/{stored.json()['id']}"


def _statuses(client, task_id: str) -> list[str]:
    history = client.get(f"/Task/{task_id}/_history").json()
    return [e["resource"]["status"] for e in reversed(history["entry"])]


def test_open_requests_are_searched_by_patient_and_status(server, client, uid):
    ors, srs = canonical(server, "ors"), canonical(server, "srs")
    waiting = _create(client, sdc_task(uid, ors))
    started = _create(client, {**sdc_task(uid, srs), "status": "in-progress"})
    _create(client, {**sdc_task(uid, ors), "status": "cancelled"})
    _create(client, sdc_task(f"{uid}-other", ors))
    requested = client.get("/Task", params={"patient": uid, "status": "requested"}).json()
    assert {e["resource"]["id"] for e in requested["entry"]} == {waiting}
    still_open = client.get("/Task", params={"patient": uid, "status": OPEN, "_include": "Task:patient"}).json()
    assert {e["resource"]["id"] for e in still_open["entry"] if e["search"]["mode"] == "match"} == {waiting, started}
    code = f"{SDC_TEMP}|complete-questionnaire"
    by_code = client.get("/Task", params={"subject": f"Patient/{uid}", "code": code, "status": OPEN}).json()
    assert {e["resource"]["id"] for e in by_code["entry"]} == {waiting, started}
    listed = MeasureTasks(server.app.state.fhir).open_for(uid)
    assert {t.id for t in listed} == {waiting, started}
    ends = {t["id"]: expires(t) for t in (client.get(f"/Task/{i}").json() for i in (waiting, started))}
    assert all(abs(t.expires - ends[t.id]) < timedelta(milliseconds=1) for t in listed)  # restriction.period.end
    assert {t.id for t in MeasureTasks(server.app.state.fhir).open_for(uid, ors.split("|")[0])} == {waiting}


def test_the_response_completes_the_request_in_the_callers_transaction(server, client, uid):
    task_id = _create(client, sdc_task(uid, canonical(server, "ors")))
    reference = _respond(client, server, uid)
    tasks = MeasureTasks(server.app.state.fhir)
    server.app.state.fhir.repo.write(lambda session: tasks.complete(session, task_id, reference))
    task = client.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    assert task["output"] == [
        {
            "type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire-response"}]},
            "valueReference": {"reference": reference},
        }
    ]
    assert task["executionPeriod"]["end"]
    assert _statuses(client, task_id) == ["requested", "completed"]
    with pytest.raises(TaskRefused, match="no longer open"):
        server.app.state.fhir.repo.write(lambda session: tasks.complete(session, task_id, reference))


def test_a_refused_completion_changes_nothing(server, client, uid):
    tasks = MeasureTasks(server.app.state.fhir)
    for_another = _create(client, sdc_task(f"{uid}-b", canonical(server, "ors")))
    for_srs = _create(client, sdc_task(uid, canonical(server, "srs")))
    reference = _respond(client, server, uid)
    for task_id, reason in ((for_another, "another patient"), (for_srs, "another Questionnaire")):
        with pytest.raises(TaskRefused, match=reason):
            server.app.state.fhir.repo.write(lambda session, t=task_id: tasks.complete(session, t, reference))
        assert _statuses(client, task_id) == ["requested"]
    with pytest.raises(TaskRefused, match="not a stored"):
        server.app.state.fhir.repo.write(lambda s: tasks.complete(s, for_srs, "QuestionnaireResponse/nope"))


def test_a_measure_done_in_session_closes_every_open_request_for_it(server, client, uid):
    ors, srs = canonical(server, "ors"), canonical(server, "srs")
    first = _create(client, sdc_task(uid, ors))
    second = _create(client, sdc_task(uid, ors.split("|")[0]))
    other_measure = _create(client, sdc_task(uid, srs))
    reference = _respond(client, server, uid)
    tasks = MeasureTasks(server.app.state.fhir)
    done = server.app.state.fhir.repo.write(
        lambda session: tasks.close_open_for(session, f"Patient/{uid}", ors.split("|")[0], reference)
    )
    assert sorted(done) == sorted([first, second])
    assert _statuses(client, first) == ["requested", "completed"]
    assert _statuses(client, other_measure) == ["requested"]


def test_the_sweep_cancels_expired_requests_once(server, client, uid):
    ors = canonical(server, "ors")
    lapsed = _create(client, sdc_task(uid, ors))  # its restriction ends in three days
    by_default = sdc_task(uid, ors)
    by_default.pop("restriction")  # authoredOn (an hour ago) + FHIR_SERVER_TASK_DAYS (4)
    default_id = _create(client, by_default)
    later = _create(client, {**sdc_task(uid, ors), "restriction": {"period": {"end": at(days=10)}}})
    now = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=4)
    tasks = MeasureTasks(server.app.state.fhir)
    cancelled = expire_due(tasks, now)
    assert {lapsed, default_id} <= set(cancelled) and later not in cancelled
    assert not {lapsed, default_id} & set(expire_due(tasks, now))  # a second sweep finds them closed
    for task_id in (lapsed, default_id):
        task = client.get(f"/Task/{task_id}").json()
        assert task["status"] == "cancelled"
        assert task["statusReason"]["text"] == EXPIRED_TEXT
        assert task["statusReason"]["coding"][0] == {
            "system": FIT_TASK_INPUT,
            "code": "expired",
            "display": EXPIRED_TEXT,
        }
        assert _statuses(client, task_id) == ["requested", "cancelled"]
    assert _statuses(client, later) == ["requested"]
    assert later in expire_due(tasks, now + timedelta(days=7))


def test_a_sweep_that_read_an_older_version_leaves_the_newer_one(server, client, uid):
    """Two processes: one read the request as due, the other completed it meanwhile; the first's cancel is
    conditional on the version it read, so the completion stands."""
    from fhir_server.measure_tasks import expiry

    task_id = _create(client, sdc_task(uid, canonical(server, "ors")))
    tasks = MeasureTasks(server.app.state.fhir)
    now = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=4)
    stale = [s for s in expiry._due(tasks, now) if s.id == task_id]
    assert stale
    reference = _respond(client, server, uid)
    server.app.state.fhir.repo.write(lambda session: tasks.complete(session, task_id, reference))
    assert server.app.state.fhir.repo.write(lambda session: expiry._expire(tasks, session, stale[0], now)) is False
    assert _statuses(client, task_id) == ["requested", "completed"]

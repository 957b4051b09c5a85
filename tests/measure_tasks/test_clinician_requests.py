"""The clinician view's "Ask the client to fill in …" over HTTP (web/clinician_routes.py, clinician/requests.py):
the form offers the client-rated measures, makes an SDC Task (requester the signed-in clinician, for and owner the
launch's patient, write-back the launch's registered EHR, language from Patient.communication), lists the open
requests with their expiry and withdraws one; CSRF-checked, and refused to the client's own launch (both
databases)."""

from __future__ import annotations

import re

import httpx
import pytest

from fhir_server.ehr.registry import register
from fhir_server.smart.sessions import COOKIE_NAME
from fhir_server.validation.sdc_task import FIT_TASK_INPUT
from tests.api.fhir import put
from tests.measure_tasks.tasks_data import canonical


def _app(server, **session) -> tuple[httpx.Client, str]:
    session_id, created = server.app.state.app_sessions.create_session(access_token="an-ehr-token", **session)
    client = httpx.Client(base_url=server.root, headers={"Cookie": f"{COOKIE_NAME}={session_id}"}, timeout=30)
    return client, created.csrf_token


def _tasks(client, patient: str) -> list[dict]:
    found = client.get("/Task", params={"patient": patient, "_count": "50"}).json()
    return [e["resource"] for e in found.get("entry", [])]


@pytest.fixture
def ehr(server, uid) -> tuple[int, str]:
    issuer = f"https://ehr-{uid}.example/fhir"
    return register(server.app.state.engine, issuer=issuer, client_id=f"app-{uid}", auth_method="none").id, issuer


def test_asking_for_a_measure_makes_a_task_and_the_view_lists_and_withdraws_it(server, client, uid, ehr):
    ehr_id, issuer = ehr
    communication = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}, "preferred": True}]
    assert put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid, "communication": communication})
    app, csrf = _app(server, patient=uid, fhir_user="Practitioner/t-1", ehr_id=ehr_id, launch_iss=issuer)
    with app:
        page = app.get("/app/clinician")
        assert page.status_code == 200, page.text[:500]
        options = dict(re.findall(r'<option value="([^"]+)">([^<]+)</option>', page.text))
        assert "ors" in options and "srs" in options and "srs-therapist" not in options
        assert "No open requests." in page.text
        asked = app.post("/app/clinician/requests", data={"csrf_token": csrf, "measure": "ors", "channel": "sms",
                                                          "address": "+1 555 0100"})  # fmt: skip
        assert asked.status_code == 303 and asked.headers["location"] == "/app/clinician#requests"
        (task,) = _tasks(client, uid)
        assert task["status"] == "requested" and task["requester"] == {"reference": "Practitioner/t-1"}
        assert task["for"] == task["owner"] == {"reference": f"Patient/{uid}"}
        assert task["input"][0]["valueCanonical"] == canonical(server, "ors")
        fit = {
            i["type"]["coding"][0]["code"]: i
            for i in task["input"]
            if i["type"]["coding"][0]["system"] == FIT_TASK_INPUT
        }
        assert fit["delivery"]["valueContactPoint"] == {"system": "sms", "value": "+1 555 0100"}
        assert fit["language"]["valueCode"] == "fr"
        assert fit["write-back"]["valueUrl"] == issuer
        assert task["restriction"]["period"]["end"] > task["authoredOn"]

        page = app.get("/app/clinician").text
        assert f'data-task="{task["id"]}"' in page and task["restriction"]["period"]["end"][:10] in page
        withdrawn = app.post(f"/app/clinician/requests/{task['id']}/cancel", data={"csrf_token": csrf})
        assert withdrawn.status_code == 303
        assert client.get(f"/Task/{task['id']}").json()["status"] == "cancelled"
        assert "No open requests." in app.get("/app/clinician").text
        again = app.post(f"/app/clinician/requests/{task['id']}/cancel", data={"csrf_token": csrf})
        assert again.status_code == 409


def test_without_a_registered_ehr_or_a_language_the_task_has_neither(server, client, uid):
    telecom = [{"system": "email", "value": f"{uid}@example.org"}]  # where the link goes without an address
    assert put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid, "telecom": telecom}).is_success
    app, csrf = _app(server, patient=uid, fhir_user="Practitioner/t-1")
    with app:
        asked = app.post("/app/clinician/requests", data={"csrf_token": csrf, "measure": "srs", "channel": "email"})
        assert asked.status_code == 303
    (task,) = _tasks(client, uid)
    codes = [i["type"]["coding"][0]["code"] for i in task["input"]]
    assert codes == ["questionnaire", "delivery"]
    assert task["input"][1]["valueContactPoint"] == {"system": "email"}  # the address: the Patient's telecom


@pytest.mark.parametrize(
    ("session", "fields", "status"),
    [
        ({"fhir_user": "Practitioner/t-1"}, {"csrf_token": "forged", "measure": "ors", "channel": "email"}, 403),
        ({"fhir_user": None}, {"measure": "ors", "channel": "email"}, 403),
        ({"fhir_user": "Patient/me"}, {"measure": "ors", "channel": "email"}, 403),
        ({"fhir_user": "RelatedPerson/mum"}, {"measure": "ors", "channel": "email"}, 403),
        ({"fhir_user": "Practitioner/t-1"}, {"measure": "srs-therapist", "channel": "email"}, 422),
        ({"fhir_user": "Practitioner/t-1"}, {"measure": "ors", "channel": "fax"}, 422),
        ({"fhir_user": "Practitioner/t-1"}, {"measure": "ors", "channel": "email", "address": "nobody"}, 422),
    ],
)
def test_refused_requests_write_nothing(server, client, uid, session, fields, status):
    app, csrf = _app(server, patient=uid, **session)
    with app:
        answer = app.post("/app/clinician/requests", data={"csrf_token": csrf, **fields})
        assert answer.status_code == status, answer.text[:300]
        assert app.post("/app/clinician/requests/x/cancel", data={"csrf_token": csrf, **fields}).status_code in (
            status if status == 403 else 409,
        )
    assert _tasks(client, uid) == []

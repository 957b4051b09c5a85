"""The whole loop with a real EHR (issue 7 acceptance): the EHR — a second instance of this server, its own
process, database and authorization server — launches the app; the clinician signs in at the EHR; the client
fills the SRS by dragging and by keyboard in Chromium; the response, its Observations, Flag and Provenance end
up in the EHR's FHIR API exactly once.  And every way a launch can fail shows a clear page and writes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_server.config import Settings
from tests.ehr.harness import EhrProcess, temp_folder
from tests.ehr.world import SRS_QUESTIONNAIRE, in_ehr_once, new_patient, wait_for
from tests.support.server import RunningServer, ServerThread
from tests.web.form_driver import drag, keys, submit_and_wait_for_thanks, tap, value_now
from tests.web.launch_world import PICKER, Launchable, ehr_launch, launch_url, sign_in, wire


@pytest.fixture(scope="module")
def ehr() -> Iterator[EhrProcess]:
    with temp_folder() as folder:
        process = EhrProcess(Path(folder))
        process.start()
        try:
            with process.client() as client:  # the EHR validates responses against the instrument
                assert client.post("/Questionnaire", **SRS_QUESTIONNAIRE).status_code == 201
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def world(ehr: EhrProcess, database_url: str, backend: str) -> Iterator[Launchable]:
    settings = Settings(
        database_url=database_url,
        auth_required=True,
        outbox_worker=True,
        outbox_poll_seconds=0.1,
        outbox_base_delay_seconds=0.2,
        outbox_max_delay_seconds=1.0,
        _env_file=None,
    )
    with ServerThread(settings, backend) as ours:
        yield wire(ehr, ours, app_client=f"fit-app-{backend}", backend_client=f"fit-write-back-{backend}")


def _local_counts(ours: RunningServer) -> tuple[int, int, int]:
    from sqlalchemy import text

    with ours.app.state.engine.connect() as conn:
        responses = conn.execute(
            text("SELECT count(*) FROM resources WHERE resource_type = 'QuestionnaireResponse'")
        ).scalar_one()
        outbox = conn.execute(text("SELECT count(*) FROM ehr_outbox")).scalar_one()
        sessions = conn.execute(text("SELECT count(*) FROM app_sessions WHERE access_token IS NOT NULL")).scalar_one()
    return responses, outbox, sessions


def test_ehr_launch_fill_by_drag_and_keyboard_written_back_once(browser, world: Launchable):
    patient, encounter = new_patient(world.ehr, "launch-e2e")
    launch = ehr_launch(world, patient, encounter)
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(launch_url(world, launch, measure="srs"))
        sign_in(page)  # at the EHR's authorization server
        page.wait_for_url(re.compile(r".*/app/form$"))
        drag(page, "relationship", 0.2, 0.85)
        tap(page, "goals", 0.7)
        keys(page, "approach", "End", *["ArrowLeft"] * 15)
        keys(page, "overall", "Home", *["PageUp"] * 9)
        assert value_now(page, "approach") == 85 and value_now(page, "overall") == 90
        submit_and_wait_for_thanks(page)
    finally:
        context.close()
    found = world.ours.app.state.fhir.repo.all_current("QuestionnaireResponse")
    mine = [s for s in found if f'"Patient/{patient}"' in (s.content or "")]
    assert len(mine) == 1, "one response for the launch"
    response_id = mine[0].id
    wait_for(world.ours.app, response_id, "in the EHR")
    copies = in_ehr_once(world.ehr, world.ours.app, response_id)
    response = copies[f"QuestionnaireResponse/{response_id}"]
    assert response["subject"] == {"reference": f"Patient/{patient}"}
    assert response["encounter"] == {"reference": f"Encounter/{encounter}"}
    assert response["questionnaire"].startswith("http://fit-fhir.org/fhir/Questionnaire/srs|")
    kinds = sorted(key.split("/")[0] for key in copies)
    assert kinds.count("Flag") >= 1 and kinds.count("Observation") >= 1 and kinds.count("Provenance") == 1


def test_standalone_launch_with_the_patient_picked_at_the_ehr(browser, world: Launchable):
    patient, _ = new_patient(world.ehr, "standalone")
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(launch_url(world, None, measure="srs"))  # no launch: the app asks for launch/patient
        sign_in(page, PICKER)
        page.locator(f'button[name="patient"][value="{patient}"]').click()
        page.wait_for_url(re.compile(r".*/app/form$"))
        for line in ("relationship", "goals", "approach", "overall"):
            keys(page, line, "Home", *["PageUp"] * 9)  # 90 each: no concern
        submit_and_wait_for_thanks(page)
    finally:
        context.close()
    found = world.ours.app.state.fhir.repo.all_current("QuestionnaireResponse")
    assert [s for s in found if f'"Patient/{patient}"' in (s.content or "")], "the picked patient's response"


def test_the_measure_named_in_fhir_context(browser, world: Launchable):
    """The EHR's launch names its copy of the SRS in fhirContext; the app reads its canonical with the launch token
    and opens that form (no measure on the launch URL, no chooser)."""
    patient, _ = new_patient(world.ehr, "fhir-context")
    with world.ehr.client() as c:
        found = c.get("/Questionnaire", params={"url": "http://fit-fhir.org/fhir/Questionnaire/srs"}).json()
    questionnaire = found["entry"][0]["resource"]["id"]
    launch = ehr_launch(world, patient, fhir_context=[{"reference": f"Questionnaire/{questionnaire}"}])
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(launch_url(world, launch))
        sign_in(page)
        page.wait_for_url(re.compile(r".*/app/form$"))
        assert "Session Rating Scale" in page.locator("h1").inner_text()
    finally:
        context.close()


def _client(world: Launchable) -> httpx.Client:
    return httpx.Client(base_url=world.ours.root, follow_redirects=False, timeout=30)


def test_unknown_iss_is_refused_without_a_redirect(world: Launchable):
    before = _local_counts(world.ours)
    with _client(world) as c:
        answer = c.get("/app/launch", params={"iss": "https://unknown-ehr.example/fhir", "launch": "x"})
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "This EHR is not registered" in answer.text
    assert "set-cookie" not in answer.headers
    assert _local_counts(world.ours) == before


def _started(world: Launchable, c: httpx.Client, patient: str) -> tuple[str, str]:
    """A launch up to the EHR's authorize redirect: (our session cookie, the state we sent)."""
    answer = c.get(launch_url(world, ehr_launch(world, patient), measure="srs").replace(world.ours.root, ""))
    assert answer.status_code == 303, answer.text
    state = httpx.URL(answer.headers["location"]).params["state"]
    cookie = re.search(r"__Host-fit-app-session=([^;]+)", answer.headers["set-cookie"]).group(1)
    return cookie, state


@pytest.mark.parametrize(
    "case",
    ["missing state", "wrong state", "denied", "expired session", "no code"],
)
def test_failed_callbacks_show_a_page_and_write_nothing(world: Launchable, case: str):
    patient, _ = new_patient(world.ehr, f"launch-fail-{case}")
    before = _local_counts(world.ours)
    with _client(world) as c:
        cookie, state = _started(world, c, patient)
        params = {
            "missing state": {"code": "abc"},
            "wrong state": {"code": "abc", "state": state[:-4] + "AAAA"},
            "denied": {"error": "access_denied", "state": state},
            "expired session": {"code": "abc", "state": state},
            "no code": {"state": state},
        }[case]
        headers = {} if case == "expired session" else {"Cookie": f"__Host-fit-app-session={cookie}"}
        answer = c.get("/app/callback", params=params, headers=headers)
    assert answer.status_code in (400, 403), answer.text
    assert "location" not in answer.headers
    title = re.search(r"<h1>([^<]+)</h1>", answer.text).group(1)
    assert title in {
        "This launch has expired",
        "This launch could not be verified",
        "Access was not granted",
        "This launch could not be completed",
    }, title
    after = _local_counts(world.ours)
    assert after[:2] == before[:2] and after[2] == before[2]  # no response, no delivery, no token kept

"""The whole loop with a real EHR (issue 7 acceptance): the EHR — a second instance of this server, its own
process, database and authorization server — launches the app; the clinician signs in at the EHR; the client
fills the SRS by dragging and by keyboard in Chromium; the response, its Observations, Flag and Provenance end
up in the EHR's FHIR API exactly once.  And every way a launch can fail shows a clear page and writes nothing.
A launch from a CDS Hooks card opens what the card's appContext names (issue 17, finding 2)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fhir_server import fhirjson
from fhir_server.scoring.attribution import Attribution, declared
from tests.ehr.harness import EhrProcess, temp_folder
from tests.ehr.world import (
    HIGH,
    LOW,
    SESSION_CLINICIAN,
    SESSION_PROGRAM,
    SRS_QUESTIONNAIRE,
    in_ehr_once,
    new_patient,
    srs,
    wait_for,
)
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint
from tests.web.conftest import AXE
from tests.web.form_driver import drag, keys, submit_and_wait_for_thanks, tap, value_now
from tests.web.launch_world import PICKER, Launchable, ehr_launch, launch_url, launching_settings, sign_in, wire
from tests.web.test_accessibility import axe_violations


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
    # An hour between the outbox worker's polls: every write-back here starts because the submission's commit woke
    # the worker (nothing in this module fails a delivery, which would wait for a poll to be retried).
    settings = launching_settings(database_url, outbox_poll_seconds=3600)
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
    # who and where: the clinician and program of the EHR's Encounter, read with the launch's token, on the
    # response and on every result, here and in the EHR
    said = Attribution(SESSION_CLINICIAN, SESSION_PROGRAM)
    for key, copy in copies.items():
        if not key.startswith("Provenance/"):
            assert declared(copy) == said, key
    assert declared(fhirjson.loads_stored(mine[0].content or "{}")) == said


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


# -- a launch from a CDS Hooks card: the EHR passes the card link's appContext in the token response -----------------
@contextmanager
def _launched(
    browser, world: Launchable, launch: str, landing: str, *, bypass_csp: bool = False, **params: str
) -> Iterator[object]:
    """``bypass_csp`` only to inject axe-core, as tests/web/test_accessibility.py does."""
    context = browser.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=bypass_csp)
    page = context.new_page()
    try:
        page.goto(launch_url(world, launch, **params))
        sign_in(page)
        page.wait_for_url(re.compile(landing))
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("launch_params", [{}, {"measure": "ors"}, {"view": "clinician"}])
def test_a_card_launch_opens_the_measure_its_app_context_names(browser, world: Launchable, launch_params):
    """The ORS-not-collected kind of card: its appContext names the form and a measure, which win over what the
    EHR's configured launch URL says (nothing, another measure, or the clinician view); no "Choose the measure"."""
    patient, _ = new_patient(world.ehr, "card-form")
    launch = ehr_launch(world, patient, app_context=json.dumps({"view": "form", "measure": "srs"}))
    with _launched(browser, world, launch, r".*/app/form$", **launch_params) as page:
        assert "Session Rating Scale" in page.locator("h1").inner_text()


def _active_flags(world: Launchable, patient: str, encounter: str, marks: tuple[int, ...], day: str) -> list[str]:
    """An SRS scored on our side for the EHR's patient (as a rating form submission is), and the patient's open
    Flags afterwards: what the CDS service's concern cards are made from."""
    with client_for(world.ours, mint(world.ours, "system/*.cruds")) as c:
        response = srs(patient, encounter, marks, f"{day}T10:00:00Z", f"{patient}-{day}")
        assert c.post("/QuestionnaireResponse", json=response).status_code == 201
        found = c.get("/Flag", params={"patient": patient, "status": "active"})
    assert found.status_code == 200, found.text
    return [e["resource"]["id"] for e in found.json().get("entry", [])]


def test_a_card_launch_points_the_clinician_view_at_its_flag(browser, world: Launchable):
    """A concern card's appContext names the clinician view and its Flag: the view opens scrolled to that Flag,
    marked with a label (not colour alone); once the Flag is closed, a launch from the same card marks nothing and
    says in one line that the concern is no longer open."""
    patient, encounter = new_patient(world.ehr, "card-flag")
    flags = _active_flags(world, patient, encounter, LOW, "2026-03-02")
    assert len(flags) == 2, flags  # below the cutoff, and an item below 9
    target, other = flags
    card = json.dumps({"view": "clinician", "flag": f"Flag/{target}"})
    landing = rf".*/app/clinician#flag-{re.escape(target)}$"
    with _launched(browser, world, ehr_launch(world, patient, app_context=card), landing, bypass_csp=True) as page:
        focused, unmarked = (
            page.locator(f'article[data-flag="{target}"]'),
            page.locator(f'article[data-flag="{other}"]'),
        )
        assert focused.get_attribute("id") == f"flag-{target}"
        assert "flag-focus" in focused.get_attribute("class") and focused.get_attribute("aria-current") == "true"
        assert focused.locator(".focus-label").inner_text() == "From the EHR's card"
        assert "flag-focus" not in unmarked.get_attribute("class") and unmarked.get_attribute("aria-current") is None
        assert page.locator(".focus-gone").count() == 0
        in_view = "e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }"
        assert focused.evaluate(in_view)
        if AXE.exists():  # the emphasis keeps WCAG 2.1 AA (CI always has axe-core; see tests/web/conftest.py)
            assert axe_violations(page) == []
        focused.get_by_role("button", name=re.compile("Acknowledge")).click()
        page.wait_for_url(re.compile(r".*/app/clinician#flags$"))
        assert page.locator(f'article[data-flag="{target}"]').count() == 0
        assert page.locator(".focus-gone").count() == 0  # acknowledged here: nothing to explain
    with _launched(browser, world, ehr_launch(world, patient, app_context=card), landing) as page:
        assert page.locator(".flag-focus").count() == 0 and page.locator("[aria-current]").count() == 0
        assert page.locator(".focus-gone").inner_text() == "The concern the EHR's card pointed to is no longer open."


def test_a_card_launch_for_a_flag_superseded_since_marks_nothing(browser, world: Launchable):
    patient, encounter = new_patient(world.ehr, "card-closed")
    (closed, _) = _active_flags(world, patient, encounter, LOW, "2026-03-02")
    assert _active_flags(world, patient, encounter, HIGH, "2026-03-09") == []  # a good session closes them
    card = json.dumps({"view": "clinician", "flag": f"Flag/{closed}"})
    with _launched(browser, world, ehr_launch(world, patient, app_context=card), r".*/app/clinician#flag-") as page:
        assert page.locator(".flag-focus").count() == 0
        assert "no longer open" in page.locator(".focus-gone").inner_text()


@pytest.mark.parametrize(
    ("app_context", "logged"),
    [
        ("{not json", "appContext ignored: not JSON"),
        ('{"view":"billing"}', "appContext ignored: unknown view 'billing'"),
        ('{"view":"form","measure":"no-such-measure"}', "appContext: measure ignored: no measure 'no-such-measure'"),
    ],
)
def test_a_garbage_app_context_lands_where_the_launch_url_says(browser, world: Launchable, caplog, app_context, logged):
    caplog.set_level(logging.WARNING, logger="fhir_server.smart")
    patient, _ = new_patient(world.ehr, "card-garbage")
    launch = ehr_launch(world, patient, app_context=app_context)
    with _launched(browser, world, launch, r".*/app/form$", measure="srs") as page:
        assert "Session Rating Scale" in page.locator("h1").inner_text()
    assert any(r.getMessage().startswith(logged) for r in caplog.records if r.name == "fhir_server.smart")

"""The whole loop of a form link, end to end with real peers: an EHR (a second instance of this server, in its own
process, authorization on) whose patient we are asked about; our server as a process; a real SMTP server.  A Task
asks for the SRS by email; the message arrives; Chromium on a 360 px phone opens the link from the message, passes
the identity check and fills the form; the response is scored here, the Task is completed, and the scores reach
the EHR exactly once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fhir_server.ehr import registry
from tests.ehr.harness import OUR_SETTINGS, EhrProcess
from tests.outreach.world import BIRTH_DATE, BIRTH_YEAR, LinkWorld, until
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.web.conftest import AXE, PHONE
from tests.web.form_driver import SRS_LINES, submit_and_wait_for_thanks, tap
from tests.web.test_accessibility import axe_violations

BACKEND_SCOPE = " ".join(f"system/{t}.crus" for t in registry.DEFAULT_RESOURCE_TYPES)


@pytest.fixture(scope="module")
def loop(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LinkWorld, EhrProcess]]:
    folder = tmp_path_factory.mktemp(f"link-loop-{backend}")
    ehr = EhrProcess(folder)
    ehr.start()
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    try:
        with database as url:
            world = LinkWorld(url, folder, f"link-loop-{backend}", **OUR_SETTINGS, FHIR_SERVER_OUTBOX_WORKER="true")
            world.start()
            try:
                client_id = f"fit-links-{backend}"
                ehr.register_backend_client(client_id, f"{world.server.root}/auth/jwks", BACKEND_SCOPE)
                registry.register(
                    world.engine, issuer=ehr.fhir_base, client_id="fit-app", backend_client_id=client_id, name="EHR"
                )
                yield world, ehr
            finally:
                world.stop()
    finally:
        ehr.stop()


def test_a_link_from_the_mail_is_filled_on_a_phone_and_reaches_the_ehr(loop, browser) -> None:
    world, ehr = loop
    with ehr.client() as at_ehr:  # the client as the EHR knows them; our server keeps the same id
        created = at_ehr.post("/Patient", json={"resourceType": "Patient", "birthDate": BIRTH_DATE})
        assert created.status_code == 201, created.text
    patient = created.json()["id"]
    with world.fhir() as fhir:
        body = {"resourceType": "Patient", "id": patient, "birthDate": BIRTH_DATE}
        assert fhir.put(f"/Patient/{patient}", json=body).status_code == 201
    to = f"{patient}@mail.test"
    asked = world.ask(patient, address=to, write_back=ehr.fhir_base)
    assert asked.status_code == 201, asked.text
    task_id = asked.json()["id"]
    (message,) = world.wait_for_mails(to)
    link = world.link_in(message)

    # The identity check on a phone, empty and after a wrong answer, passes axe-core (a GET and a wrong answer use
    # nothing up; axe goes in as an inline script, so only this context bypasses the page's CSP).
    if not AXE.exists() and os.environ.get("CI"):
        pytest.fail("axe-core is not installed (npm ci in tests/web); CI must run the accessibility checks")
    if AXE.exists():
        checking = browser.new_context(viewport=PHONE, bypass_csp=True)
        try:
            page = checking.new_page()
            page.goto(link)
            assert axe_violations(page) == []
            page.get_by_label("Your year of birth").fill("1899")
            page.get_by_role("button", name="Continue").click()
            page.get_by_text("That is not the year we have").wait_for()
            assert axe_violations(page) == []
        finally:
            checking.close()
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(link)
        page.get_by_label("Your year of birth").fill(BIRTH_YEAR)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{world.server.root}/app/form")
        for line, at in zip(SRS_LINES, (0.3, 0.8, 0.8, 0.8), strict=True):
            tap(page, line, at)
        submit_and_wait_for_thanks(page)
    finally:
        context.close()

    task = world.task(task_id)
    assert task["status"] == "completed"
    response_ref = task["output"][0]["valueReference"]["reference"]
    with world.fhir() as fhir:
        response = fhir.get(f"/{response_ref}").json()
        assert response["subject"]["reference"] == f"Patient/{patient}"
        ours = fhir.get("/Observation", params={"derived-from": response_ref, "_count": "100"}).json()
    local_codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in ours.get("entry", []))
    assert local_codes, "the response was scored here"
    # Relationship at 30 % of its line: the SRS total is below the cutoff, so a Flag is raised too.
    with world.fhir() as fhir:
        flags = fhir.get("/Flag", params={"patient": f"Patient/{patient}"}).json()
    assert flags.get("entry"), "a concern was raised"

    def at_the_ehr() -> list[str]:
        with ehr.client() as at_ehr:
            found = at_ehr.get("/Observation", params={"subject": f"Patient/{patient}", "_count": "100"}).json()
        return sorted(e["resource"]["code"]["coding"][0]["code"] for e in found.get("entry", []))

    delivered = until(lambda: (codes := at_the_ehr()) and len(codes) >= len(local_codes) and codes, "the EHR's copy")
    assert delivered == local_codes  # every result, exactly once

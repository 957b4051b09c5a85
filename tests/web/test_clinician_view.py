"""The clinician view in Chromium (issue 8 acceptance): a client with 12 sessions, opened by an EHR launch with a
practitioner signed in; the chart has a point per session at its value, the SRS cutoff and the age-appropriate
ORS cutoff lines, the flagged sessions marked, and the table lists every score; acknowledging a concern closes
the Flag (who and when recorded) and its CDS Hooks card disappears.  Also the sandbox's first-run loop: launch
from /sandbox, fill the SRS, hand back, see the result."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.auth.launch_contexts import create_launch
from fhir_server.clinician.charts import _y
from fhir_server.config import Settings
from fhir_server.store import cds_store
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint
from tests.web.conftest import AXE, unavailable
from tests.web.form_driver import drag, keys, submit_and_wait_for_thanks
from tests.web.test_accessibility import axe_violations
from tests.web.test_layout_and_iframe import keep

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2"
SRS_MARKS = [95, 94, 92, 93, 90, 88, 91, 86, 84, 88, 83, 80]  # every line the same mark → total = mark / 2.5
ORS_MARKS = [45, 50, 52, 55, 58, 60, 62, 61, 64, 66, 68, 70]


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_url, auth_required=True, sandbox=True, outbox_worker=True,
                        outbox_poll_seconds=0.1, _env_file=None)  # fmt: skip
    with ServerThread(settings, backend) as running:
        running.app.state.sandbox.ensure(running.root)
        yield running


def _response(patient: str, canonical: str, day: str, mark: int) -> dict:
    names = (
        ("relationship", "goals", "approach", "overall")
        if canonical == SRS
        else ("individually", "interpersonally", "socially", "overall")
    )
    items = [{"linkId": n, "answer": [{"valueInteger": mark}]} for n in names]
    if canonical == ORS:
        respondent = {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-respondent", "code": "self"}
        items.insert(0, {"linkId": "respondent", "answer": [{"valueCoding": respondent}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": "urn:test:session", "value": f"{patient}-{canonical[-12:]}-{day}"},
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": f"{day}T10:00:00Z",
        "item": items,
    }


@pytest.fixture(scope="module")
def twelve_sessions(ours: RunningServer) -> str:
    patient = f"twelve-{uuid.uuid4().hex[:8]}"
    with client_for(ours, mint(ours, "system/*.cruds")) as c:
        body = {"resourceType": "Patient", "id": patient, "birthDate": "1985-05-05", "name": [{"text": "Robin Test"}]}
        assert c.put(f"/Patient/{patient}", json=body).status_code == 201
        for week, (srs, ors) in enumerate(zip(SRS_MARKS, ORS_MARKS, strict=True)):
            day = time.strftime(
                "%Y-%m-%d", time.gmtime(time.mktime((2026, 8, 3, 12, 0, 0, 0, 0, 0)) + week * 7 * 86400)
            )
            for canonical, mark in ((ORS, ors), (SRS, srs)):
                answer = c.post("/QuestionnaireResponse", json=_response(patient, canonical, day, mark))
                assert answer.status_code == 201, answer.text
    return patient


def _open_clinician_view(browser, ours: RunningServer, patient: str, *, bypass_csp: bool = False):
    context_of_launch = {"patient": patient, "user": "demo", "need_patient_banner": True}
    created = create_launch(ours.app.state.oauth, ours.app.state.patients, context_of_launch, "test EHR chart")
    context = browser.new_context(viewport={"width": 800, "height": 900}, bypass_csp=bypass_csp)
    page = context.new_page()
    query = httpx.QueryParams({"iss": ours.fhir_base, "launch": created["launch"], "view": "clinician"})
    page.goto(f"{ours.root}/app/launch?{query}")
    page.locator("#username").fill("demo")
    page.locator("#password").fill("sandbox-demo")
    page.locator('button[value="login"]').click()
    page.wait_for_url(re.compile(r".*/app/clinician$"))
    return context, page


def _cards(ours: RunningServer, patient: str, key: RSAKey) -> list[dict]:
    now = int(time.time())
    claims = {"iss": "https://ehr.test/cds", "aud": f"{ours.root}/cds-services/fit-alliance-patient-view",
              "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex, "sub": "ehr"}  # fmt: skip
    signed = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": patient, "userId": "Practitioner/sandbox-therapist"},
        "fhirServer": ours.fhir_base,
        "fhirAuthorization": {"access_token": mint(ours, "system/*.rs"), "token_type": "Bearer", "scope": "x"},
    }
    answer = httpx.post(f"{ours.root}/cds-services/fit-alliance-patient-view", json=body,
                        headers={"Authorization": f"Bearer {signed}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()["cards"]


def test_chart_table_and_acknowledging_a_concern(browser, ours, twelve_sessions, backend, tmp_path):
    key = RSAKey.generate_key(2048, parameters={"kid": "cds-test", "alg": "RS384"}, private=True)
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    cds_store.add_client(ours.app.state.engine, "https://ehr.test/cds", "EHR", None, jwks, [ours.fhir_base])
    context, page = _open_clinician_view(browser, ours, twelve_sessions)
    try:
        assert "Robin Test" in page.locator(".banner").inner_text()
        srs_points = page.locator("svg.trend g.series-srs g.point")
        ors_points = page.locator("svg.trend g.series-ors g.point")
        assert srs_points.count() == 12 and ors_points.count() == 12
        values = [float(srs_points.nth(i).get_attribute("data-value")) for i in range(12)]
        assert values == [m / 2.5 for m in SRS_MARKS]
        assert "SRS cutoff 36" in page.locator("svg.trend g.srs-cutoff").text_content()
        assert "ORS cutoff 25" in page.locator("svg.trend g.ors-cutoff").text_content()
        srs_y = float(page.locator("svg.trend g.srs-cutoff line").get_attribute("y1"))
        assert srs_y == round(_y(Decimal(36)), 1)  # the line sits at 36 on the 0-40 scale
        flagged = page.locator('svg.trend g.series-srs g.point[data-flagged="true"]')
        assert flagged.count() >= 1 and page.locator("svg.trend circle.flag-marker").count() == flagged.count()
        rows = page.locator("table.all tbody tr")
        assert rows.count() == 24
        assert page.locator("table.all").inner_text().count("SRS") >= 12
        shot = tmp_path / "clinician-800.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, backend)  # docs/screenshots/ with FHIR_SERVER_SAVE_SCREENSHOTS=1 (make screenshots)
        flags = page.locator("article.flag")
        assert flags.count() >= 1
        flag_id = flags.first.get_attribute("data-flag")
        before = {c["uuid"] for c in _cards(ours, twelve_sessions, key)}
        flags.first.locator("button.ack").click()
        page.wait_for_url(re.compile(r".*/app/clinician#flags$"))
        assert page.locator(f'article.flag[data-flag="{flag_id}"]').count() == 0
    finally:
        context.close()
    with client_for(ours, mint(ours, "system/*.rs")) as c:
        flag = c.get(f"/Flag/{flag_id}").json()
        active = c.get("/Flag", params={"subject": f"Patient/{twelve_sessions}", "status": "active"}).json()
    code = flag["code"]["coding"][0]["code"]
    still_open = [e["resource"]["code"]["coding"][0]["code"] for e in active.get("entry", [])]
    assert code not in still_open, "every session's Flag of that concern is closed with it"
    assert flag["status"] == "inactive" and "end" in flag["period"]
    acknowledgement = next(e for e in flag["extension"] if e["url"].endswith("flag-acknowledgement"))
    assert acknowledgement["extension"][0]["valueReference"]["reference"] == "Practitioner/sandbox-therapist"
    after = {c["uuid"] for c in _cards(ours, twelve_sessions, key)}
    assert len(before - after) == 1, "the acknowledged concern's card is gone"


def test_sandbox_first_run(browser, ours):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(f"{ours.root}/sandbox")
        page.locator('button[aria-label="SRS for Jo Lindqvist"]').click()
        page.locator("#username").fill("demo")
        page.locator("#password").fill("sandbox-demo")
        page.locator('button[value="login"]').click()
        page.wait_for_url(re.compile(r".*/app/form$"))
        for line in ("relationship", "goals", "approach", "overall"):
            drag(page, line, 0.1, 0.8)
        keys(page, "goals", "Home", *["PageUp"] * 6)  # 60: low enough for a concern
        submit_and_wait_for_thanks(page)
        page.locator("a.clinician-link").click()
        page.wait_for_url(re.compile(r".*/app/result$"))
        text = page.locator("main").inner_text()
        assert "Session Rating Scale" in text or "SRS" in text
        assert "Ask" in text  # the follow-up question of the concern
        deadline = time.monotonic() + 60
        while "in the EHR" not in page.locator(".delivery").inner_text() and time.monotonic() < deadline:
            time.sleep(0.5)
            page.reload()
        assert page.locator(".delivery").inner_text() == "in the EHR"
    finally:
        context.close()


def test_clinician_view_accessibility(browser, ours, twelve_sessions):
    """axe-core: no serious or critical WCAG 2.1 AA violation (the test context bypasses the page's CSP only to
    inject axe, as tests/web/test_accessibility.py does)."""
    if not AXE.exists():
        unavailable("axe-core is not installed (npm ci in tests/web; make test does it)")
    context, page = _open_clinician_view(browser, ours, twelve_sessions, bypass_csp=True)
    try:
        assert axe_violations(page) == []
    finally:
        context.close()


def test_the_sandbox_offers_the_measures_the_chooser_lists_for_each_clients_age(ours):
    """The sandbox's launch buttons come from the library (issue 18, point 4): the adult gets the ORS, SRS and
    WAI-SR; Sam, 16, the ORS and SRS but not the WAI-SR (made for adults)."""
    page = httpx.get(f"{ours.root}/sandbox", timeout=30).text
    labels = set(re.findall(r'aria-label="([^"]+)"', page))
    assert {"ORS for Alex Rivera", "SRS for Alex Rivera", "WAI-SR for Alex Rivera"} <= labels
    assert {"ORS for Sam Okafor", "SRS for Sam Okafor"} <= labels and "WAI-SR for Sam Okafor" not in labels

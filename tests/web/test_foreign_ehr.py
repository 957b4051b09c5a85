"""The whole loop against an EHR that is not ours (issue 17, point 5): Medplum's FHIR store from npm behind a
SMART authorization-server stand-in shaped like smart-launcher-v2 (tests/foreign_ehr: single-key JWKS, id_tokens
without ``kid``, v1 scopes only, ``launch`` + ``patient`` + ``encounter`` context).  It scores nothing and
behaves unlike us: its ids, its version ids, its search.

- full mode (transaction, conditional create/update): an EHR launch, the SRS filled in Chromium, the write-back
  through an outage of the EHR, every result there exactly once; then the clinician view launched as from a CDS
  card (its appContext relayed by the EHR), the therapist's own rating of the session first (the view is blind
  until then), and the concern acknowledged, the closed Flag reaching the EHR as an update of its copy.
- minimal mode (Epic-like: no transaction, no conditional writes, really refused or ignored): the write-back
  searches for each key before writing, a lost answer is not a duplicate, and a Flag closed later is updated by
  the id the search found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from fhir_server.ehr import registry
from tests.ehr.world import HIGH, LOW, in_ehr_once, local_results, srs, submit, wait_for
from tests.foreign_ehr.harness import ForeignEhr, running
from tests.support.server import RunningServer, ServerThread
from tests.web.form_driver import keys, submit_and_wait_for_thanks
from tests.web.launch_world import launching_settings

PRACTITIONER = "therapist-1"
APP_SCOPE = "launch launch/patient openid fhirUser online_access patient/*.read patient/*.write"
BACKEND_SCOPE = "system/*.read system/*.write"


def _ours(database_url: str, backend: str) -> Iterator[RunningServer]:
    settings = launching_settings(database_url, outbox_timeout_seconds=2.0)
    with ServerThread(settings, backend) as ours:
        yield ours


def _wire(foreign: ForeignEhr, ours: RunningServer, backend: str) -> registry.EhrRegistration:
    """As an administrator does it: our app and our write-back client registered at the EHR, the EHR here."""
    app_client, backend_client = f"fit-app-{backend}", f"fit-backend-{backend}"
    foreign.register_client(app_client, scope=APP_SCOPE, redirect_uris=[f"{ours.root}/app/callback"])
    foreign.register_client(backend_client, scope=BACKEND_SCOPE, jwks_url=f"{ours.root}/auth/jwks")
    return registry.register(
        ours.app.state.engine,
        issuer=foreign.fhir_base,
        client_id=app_client,
        auth_method="none",
        backend_client_id=backend_client,
        name=f"Medplum store ({foreign.capabilities})",
    )


def _patient(foreign: ForeignEhr, uid: str) -> tuple[str, str]:
    patient = foreign.seed(
        {"resourceType": "Patient", "id": f"p-{uid}", "name": [{"family": "Okafor"}], "birthDate": "1990-04-02"}
    )
    encounter = foreign.seed(
        {
            "resourceType": "Encounter",
            "id": f"e-{uid}",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
    )
    return patient["id"], encounter["id"]


@pytest.fixture(scope="module")
def full() -> Iterator[ForeignEhr]:
    for foreign in running("full"):
        foreign.seed({"resourceType": "Practitioner", "id": PRACTITIONER, "name": [{"family": "Rivera"}]})
        yield foreign


@pytest.fixture(scope="module")
def minimal() -> Iterator[ForeignEhr]:
    yield from running("minimal")


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str) -> Iterator[RunningServer]:
    yield from _ours(database_url, backend)


def _launch_url(ours: RunningServer, foreign: ForeignEhr, launch: str, **params: str) -> str:
    from httpx import QueryParams

    return f"{ours.root}/app/launch?{QueryParams({'iss': foreign.fhir_base, 'launch': launch, **params})}"


def test_launch_form_write_back_through_an_outage_clinician_view_and_acknowledge(browser, full, ours, backend):
    registration = _wire(full, ours, backend)
    patient, encounter = _patient(full, f"{backend}-loop")
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(_launch_url(ours, full, full.launch(patient, PRACTITIONER, encounter), measure="srs"))
        page.wait_for_url(re.compile(r".*/app/form$"))  # the stand-in approves at once, as the launcher does
        for line, presses in zip(("relationship", "goals", "approach", "overall"), (8, 8, 7, 8), strict=True):
            keys(page, line, "Home", *["PageUp"] * presses)  # 80, 80, 70, 80: below the cutoff
        full.outage(3)  # the EHR is down while the answers are submitted and first delivered
        submit_and_wait_for_thanks(page)
    finally:
        context.close()
    [response] = [
        s.id
        for s in ours.app.state.fhir.repo.all_current("QuestionnaireResponse")
        if f'"Patient/{patient}"' in (s.content or "")
    ]
    wait_for(ours.app, response, "in the EHR")
    log = full.log()
    assert any(r.get("outage") for r in log), "nothing reached the EHR while it was down"
    copies = in_ehr_once(full, ours.app, response)  # every resource once, referring to the EHR's copies
    assert copies[f"QuestionnaireResponse/{response}"]["encounter"] == {"reference": f"Encounter/{encounter}"}
    # the id_token had no kid and the scopes were v1: the user is known, the write used the launch's token
    tokens = [r for r in log if r["path"].startswith("/auth/token") and r["status"] == 200]
    assert tokens and all(".cru" not in (r["form"].get("scope") or "") for r in tokens)
    flags = [f for k, f in copies.items() if k.startswith("Flag/")]
    assert flags and all(f["status"] == "active" for f in flags)

    # A CDS card's link: the EHR launches the plain launch URL and hands the card's appContext back in its token
    # response; the app opens the clinician view at that concern.
    flag_id = next(r["id"] for r in local_results(ours.app, response) if r["resourceType"] == "Flag")
    card = json.dumps({"view": "clinician", "flag": f"Flag/{flag_id}"})
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    try:
        page.goto(_launch_url(ours, full, full.launch(patient, PRACTITIONER, encounter, app_context=card)))
        page.wait_for_url(re.compile(rf".*/app/clinician#flag-{re.escape(flag_id)}$"))
        assert "Okafor" in page.locator("body").inner_text()  # the banner's name read from the EHR's Patient
        # Blind by default: today's rating and its concern wait until the therapist has rated the session
        assert page.locator(f'article.flag[data-flag="{flag_id}"]').count() == 0
        page.locator("button.rate").click()
        page.wait_for_url(re.compile(r".*/app/form$"))
        for line in ("relationship", "goals", "approach", "overall"):
            keys(page, line, "Home", *["PageUp"] * 9)  # 90 each: 36.0 beside the client's 31.0
        page.locator("button.submit").click()
        page.wait_for_url(re.compile(r".*/app/clinician$"))
        page.locator(f'article.flag[data-flag="{flag_id}"] button.ack').click()
        page.wait_for_url(re.compile(r".*/app/clinician#flags$"))
    finally:
        context.close()
    wait_for(ours.app, response, "in the EHR")
    closed = in_ehr_once(full, ours.app, response)[f"Flag/{flag_id}"]
    assert closed["status"] == "inactive"
    acknowledgement = next(e for e in closed["extension"] if e["url"].endswith("flag-acknowledgement"))
    assert acknowledgement["extension"][0]["valueReference"]["reference"].endswith(f"Practitioner/{PRACTITIONER}")
    assert registration.id


def test_an_ehr_without_transactions_or_conditional_writes(minimal, ours, backend):
    """Epic-like: each write is preceded by a search for its key; the answer to a create lost on the way back
    (the EHR's outage begins just after it stored it) is found by the retry's search, not created again."""
    registration = _wire(minimal, ours, backend)
    patient, encounter = _patient(minimal, f"{backend}-min")
    minimal.clear_log()  # the EHR lives for the module: only this test's requests are judged
    minimal.lose_answer("POST", "/fhir/Provenance")
    first = submit(ours.app, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", f"{backend}1"))
    wait_for(ours.app, first, "in the EHR")
    found = in_ehr_once(minimal, ours.app, first)
    assert sorted(k.split("/")[0] for k in found).count("Flag") == 2
    log = minimal.log()
    assert not any(r["method"] == "POST" and r["path"].rstrip("/") == "/fhir" for r in log)  # no transaction
    assert not any("if-none-exist" in r["headers"] for r in log)  # no conditional create it does not offer
    for kind in ("QuestionnaireResponse", "Observation", "Flag", "Provenance"):
        writes = [i for i, r in enumerate(log) if r["method"] == "POST" and r["path"] == f"/fhir/{kind}"]
        searches = [i for i, r in enumerate(log) if r["method"] == "GET" and r["path"].startswith(f"/fhir/{kind}?")]
        assert writes and searches and searches[0] < writes[0], kind
    provenance_posts = [r for r in log if r["method"] == "POST" and r["path"] == "/fhir/Provenance"]
    assert [bool(r.get("lost")) for r in provenance_posts] == [True]  # stored once; the retry found it by its tag

    # The next session closes both Flags: their copies are updated by the ids the searches found (no PUT ?query).
    second = submit(
        ours.app, registration.id, srs(patient, encounter, HIGH, "2026-11-09T10:00:00+00:00", f"{backend}2")
    )
    wait_for(ours.app, second, "in the EHR")
    closed = {k: f for k, f in in_ehr_once(minimal, ours.app, second).items() if k.startswith("Flag/")}
    assert len(closed) == 2 and all(f["status"] == "inactive" for f in closed.values())
    puts = [r for r in minimal.log() if r["method"] == "PUT"]
    assert len(puts) == 2 and all(re.fullmatch(r"/fhir/Flag/[^/?]+", r["path"]) for r in puts), puts
    assert {r["status"] for r in puts} == {200}

"""The clinician's pages are the clinician's: an app session whose signed-in user is the client (fhirUser a
Patient, or a RelatedPerson) gets 403 on the clinician view and on acknowledging a concern — the view shows the
therapist's own ratings and gaps, which a patient-context token never reads (docs/security.md) — while a
clinician's session, and an EHR launch that names no user, open it as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server.smart.sessions import COOKIE_NAME
from tests.support.server import RunningServer
from tests.web.therapist_world import serving


@pytest.fixture(scope="module")
def ours(database_url: str, backend: str, ehr_origin: str) -> Iterator[RunningServer]:
    with serving(database_url, backend, ehr_origin) as running:
        yield running


@pytest.mark.parametrize(
    ("fhir_user", "status"),
    [
        ("Patient/p-1", 403),
        ("https://ehr.example/fhir/RelatedPerson/r-9", 403),
        ("Practitioner/t-1", 200),
        (None, 200),
    ],
)
def test_the_clinician_view_by_who_is_signed_in(browser, ours, fhir_user, status):
    store = ours.app.state.app_sessions
    session_id, session = store.create_session(access_token="an-ehr-token", patient="p-1", fhir_user=fhir_user)
    context = browser.new_context()
    try:
        context.add_cookies([{"name": COOKIE_NAME, "value": session_id, "domain": "127.0.0.1", "path": "/",
                              "secure": True, "httpOnly": True, "sameSite": "None"}])  # fmt: skip
        page = context.new_page()
        answer = page.goto(f"{ours.root}/app/clinician")
        assert answer.status == status, page.content()[:500]
        if status == 403:
            assert page.locator("h1").inner_text() == "This view is for clinicians"
            acknowledged = page.request.post(
                f"{ours.root}/app/clinician/flags/f-1/acknowledge", form={"csrf_token": session.csrf_token}
            )
            assert acknowledged.status == 403
    finally:
        context.close()

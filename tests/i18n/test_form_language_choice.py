"""Which language the form speaks, over HTTP (web/form_language.py): the Patient's preferred communication outranks
the browser's Accept-Language, a language the launch gave (kept in the session) outranks both, and the first
choice is kept for the session's later pages (both databases)."""

from __future__ import annotations

import httpx

from fhir_server.smart.sessions import COOKIE_NAME
from tests.api.fhir import put

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
SPANISH = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]}, "preferred": True}]
GERMAN_THEN_FRENCH = [
    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "de"}]}, "preferred": True},
    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}},
]


def _form(server, patient: str, accept: str, **session) -> str:
    session_id, _ = server.app.state.app_sessions.create_session(patient=patient, questionnaire=SRS, **session)
    headers = {"Cookie": f"{COOKIE_NAME}={session_id}", "Accept-Language": accept}
    with httpx.Client(base_url=server.root, headers=headers, timeout=30) as browser:
        first = browser.get("/app/form")
        assert first.status_code == 200, first.text[:300]
        again = browser.get("/app/form", headers={"Accept-Language": "en"})  # the choice stays with the session
        assert again.text.count('<html lang="') == 1
        assert again.text.split('<html lang="')[1][:2] == first.text.split('<html lang="')[1][:2]
        return first.text.split('<html lang="')[1][:2]


def test_the_patients_preferred_language_outranks_the_browser(server, client, uid):
    assert put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid, "communication": SPANISH}).is_success
    assert _form(server, uid, "fr-FR,fr;q=0.9") == "es"


def test_a_language_the_app_does_not_speak_is_passed_over(server, client, uid):
    body = {"resourceType": "Patient", "id": uid, "communication": GERMAN_THEN_FRENCH}
    assert put(client, f"/Patient/{uid}", body).is_success
    assert _form(server, uid, "es") == "fr"


def test_the_browser_decides_when_nothing_else_does_and_the_launch_outranks_all(server, client, uid):
    assert _form(server, f"{uid}-a", "es-AR,es;q=0.8,en;q=0.5") == "es"
    assert _form(server, f"{uid}-b", "de-DE") == "en"
    assert put(client, f"/Patient/{uid}", {"resourceType": "Patient", "id": uid, "communication": SPANISH}).is_success
    assert _form(server, uid, "es", language="fr") == "fr"

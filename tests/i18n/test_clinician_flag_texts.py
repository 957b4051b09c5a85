"""The follow-up questions of the Flags the clinician view shows are in the clinician's language (the session's):
stored Flags keep the English scoring wrote; the view says it in French from the instrument's texts.json."""

from __future__ import annotations

import httpx

from fhir_server.smart.sessions import COOKIE_NAME
from tests.api.fhir import post

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"


def srs_response(patient: str, marks: tuple[int, int, int, int]) -> dict:
    items = [
        {"linkId": link_id, "answer": [{"valueInteger": mark}]}
        for link_id, mark in zip(("relationship", "goals", "approach", "overall"), marks, strict=True)
    ]
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": SRS,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-12-01T10:00:00Z",
        "item": items,
    }


def test_the_clinician_view_asks_in_the_sessions_language(server, client, uid):
    assert post(client, "/QuestionnaireResponse", srs_response(uid, (60, 70, 65, 70))).status_code == 201
    flags = client.get("/Flag", params={"patient": f"Patient/{uid}", "status": "active"}).json()["entry"]
    english = [f["resource"]["code"]["text"] for f in flags]
    assert any("Ask with curiosity" in text for text in english)  # stored as scoring wrote it
    for language, expected, absent in (("fr", "Demandez avec curiosité", "Ask with curiosity"),
                                       ("en", "Ask with curiosity", "Demandez avec curiosité")):  # fmt: skip
        session_id, _ = server.app.state.app_sessions.create_session(
            patient=uid, fhir_user="Practitioner/t-1", language=language, access_token="an-ehr-token"
        )
        with httpx.Client(base_url=server.root, headers={"Cookie": f"{COOKIE_NAME}={session_id}"}) as app:
            page = app.get("/app/clinician")
        assert page.status_code == 200, page.text[:300]
        assert expected in page.text and absent not in page.text

"""A submission's identifier may hold search-reserved characters ('|', ',', '$', '\\'): the replay check that
keeps one response per identifier escapes them (R4 §3.1.1.4.8 "Escaping search parameters"), so such a response
is stored once and its replay finds it, instead of a 400 for a malformed search."""

from __future__ import annotations

from tests.api.fhir import post


def _response(uid: str, value: str) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": "urn:test:escape", "value": value},
        "questionnaire": "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/esc-{uid}"},
        "authored": "2026-11-20T16:45:00Z",
        "item": [
            {"linkId": n, "answer": [{"valueInteger": 90}]} for n in ("relationship", "goals", "approach", "overall")
        ],
    }


def test_identifier_with_reserved_characters_is_replay_safe(client, uid):
    value = f"{uid}|srs,1.0.0$a\\b"
    first = post(client, "/QuestionnaireResponse", _response(uid, value))
    assert first.status_code == 201, first.text
    again = post(client, "/QuestionnaireResponse", _response(uid, value))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = post(client, "/QuestionnaireResponse", _response(uid, f"{uid}|srs"))  # a prefix is another identifier
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]

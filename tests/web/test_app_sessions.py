"""The SMART app's server-side session (docs/security.md: tokens server-side, cookies ``HttpOnly; Secure; SameSite=None;
Partitioned``, CSRF on every state change) and the form's HTTP contract, over real HTTP on both databases:
the dev-session route exists only when switched on; the session id is 256 random bits of which only the SHA-256 is
stored; expired, missing and forged requests write nothing; replayed and parallel submissions store one response;
a content pack's licensed wording is what the form shows."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from fhir_server.config import Settings
from fhir_server.smart.sessions import COOKIE_NAME
from fhir_server.store.records import utc_now
from fhir_server.store.tables import app_sessions
from tests.support.server import ServerThread
from tests.web.conftest import search

CONTENT_PACK = Path(__file__).parents[1] / "data" / "content-pack-example"
SRS_MARKS = {"relationship": "91", "goals": "88", "approach": "95", "overall": "90"}


def start_session(root: str, patient: str, measure: str = "srs", **extra: str) -> httpx.Client:
    """An httpx client holding a new form session's cookie, as a browser would after the launch."""
    answer = httpx.post(f"{root}/app/dev-session", data={"patient": patient, "measure": measure, **extra})
    assert answer.status_code == 303 and answer.headers["location"] == "/app/form", answer.text
    session_id = answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    return httpx.Client(base_url=root, cookies={COOKIE_NAME: session_id}, timeout=30)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the form carries its CSRF token"
    return match.group(1)


def submit_fields(csrf: str, marks: dict[str, str]) -> dict[str, str]:
    return {"csrf_token": csrf, **{f"answer.{k}": v for k, v in marks.items()}}


def test_the_dev_session_route_does_not_exist_by_default(server):
    assert Settings(_env_file=None).app_dev_sessions is False
    answer = httpx.post(f"{server.root}/app/dev-session", data={"patient": "p1", "measure": "srs"})
    assert answer.status_code == 404
    assert "set-cookie" not in answer.headers
    assert httpx.get(f"{server.root}/app/form").status_code == 403  # the form itself is there, without a session


def test_session_cookie_attributes_and_only_the_hash_is_stored(form_server, patient):
    answer = httpx.post(f"{form_server.root}/app/dev-session", data={"patient": patient, "measure": "srs"})
    cookie = answer.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    name, session_id = name_value.split("=", 1)
    assert name == COOKIE_NAME and name.startswith("__Host-")
    assert {"HttpOnly", "Secure", "SameSite=None", "Partitioned", "Path=/"} <= set(attributes)
    assert not any(a.lower().startswith("domain") for a in attributes)
    assert len(session_id) >= 43  # 32 random bytes, base64url
    assert session_id not in answer.headers["location"]
    with form_server.app.state.engine.connect() as conn:
        rows = conn.execute(select(app_sessions).where(app_sessions.c.patient == patient)).mappings().all()
    assert [r["session_hash"] for r in rows] == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert session_id not in str(dict(rows[0]))


def test_tokens_and_context_stay_server_side(form_server, patient):
    store = form_server.app.state.app_sessions
    session_id, session = store.create_session(
        patient=patient, questionnaire="http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
    )
    secret = "ehr-access-token-" + patient
    updated = store.update(session, access_token=secret, refresh_token=secret + "-r", fhir_context=[{"reference": "x"}])
    assert updated is not None and updated.fhir_context == [{"reference": "x"}] and updated.access_token == secret
    with pytest.raises(ValueError):
        store.update(session, response_id="forged")  # not a launch field
    with httpx.Client(base_url=form_server.root, cookies={COOKIE_NAME: session_id}) as browser:
        page = browser.get("/app/form")
    assert page.status_code == 200 and secret not in page.text and session_id not in page.text
    new_id = store.rekey(updated)
    assert new_id and new_id != session_id
    with httpx.Client(base_url=form_server.root, cookies={COOKIE_NAME: session_id}) as old:
        assert old.get("/app/form").status_code == 403  # the old id is dead after the rekey


def test_the_outbox_gets_the_launch_token_only_while_it_is_valid(form_server, patient):
    """``token_for`` is the write-back worker's TokenSource: the launch's own token for the EHR it came from."""
    store = form_server.app.state.app_sessions
    _, session = store.create_session(patient=patient, ehr_id=7, access_token="t-" + patient)
    ref = store.token_ref(session)
    assert ref == session.session_hash and "t-" not in ref

    class Ehr:
        def __init__(self, id: int) -> None:
            self.id = id

    assert store.token_for(Ehr(7), ref) == "t-" + patient
    assert store.token_for(Ehr(8), ref) is None  # another EHR never gets this launch's token
    assert store.token_for(Ehr(7), None) is None and store.token_for(Ehr(7), "0" * 64) is None
    store.update(session, token_expires_at=utc_now() - timedelta(seconds=1))
    assert store.token_for(Ehr(7), ref) is None


def test_pages_carry_the_security_headers(form_server, ehr_origin, patient):
    with start_session(form_server.root, patient) as browser:
        page = browser.get("/app/form")
    policy = page.headers["content-security-policy"]
    assert f"frame-ancestors 'self' {ehr_origin}" in policy
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<script src="/app/static/form.js' in page.text and "<script>" not in page.text


def test_missing_expired_and_forged_requests_write_nothing(form_server, fhir, patient):
    root = form_server.root
    assert httpx.get(f"{root}/app/form").status_code == 403
    assert httpx.post(f"{root}/app/form/draft", json={"answers": {}}).status_code == 403
    with start_session(root, patient) as browser:
        csrf = csrf_of(browser.get("/app/form").text)
        assert browser.post("/app/form/draft", json={"answers": {"goals": 5}}).status_code == 403
        assert (
            browser.post(
                "/app/form/draft", json={"answers": {"goals": 5}}, headers={"X-CSRF-Token": "x" + csrf}
            ).status_code
            == 403
        )
        forged = browser.post("/app/form", data=submit_fields("wrong", SRS_MARKS))
        assert forged.status_code == 403 and "out of date" in forged.text
        assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []
        with form_server.app.state.engine.begin() as conn:  # the clock moves past the session's end
            conn.execute(
                update(app_sessions)
                .where(app_sessions.c.patient == patient)
                .values(expires_at=utc_now() - timedelta(seconds=1))
            )
        expired = browser.post("/app/form", data=submit_fields(csrf, SRS_MARKS))
        assert expired.status_code == 403 and "hand the device back" in expired.text
        assert browser.get("/app/form").status_code == 403
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []


def test_drafts_are_checked_against_the_questionnaire(form_server, patient):
    with start_session(form_server.root, patient) as browser:
        headers = {"X-CSRF-Token": csrf_of(browser.get("/app/form").text)}
        assert browser.post("/app/form/draft", json={"answers": {"nope": 5}}, headers=headers).status_code == 422
        assert browser.post("/app/form/draft", json={"answers": {"goals": 101}}, headers=headers).status_code == 422
        assert browser.post("/app/form/draft", json={"answers": {"goals": True}}, headers=headers).status_code == 422
        assert browser.post("/app/form/draft", content=b"{", headers=headers).status_code == 400
        big = {"answers": {"goals": 5}, "pad": "x" * 70_000}
        assert browser.post("/app/form/draft", json=big, headers=headers).status_code == 413
        assert browser.post("/app/form/draft", json={"answers": {"goals": 64}}, headers=headers).status_code == 204
        assert 'aria-valuenow="64"' in browser.get("/app/form").text


def test_missing_answers_show_the_form_again_and_store_nothing(form_server, fhir, patient):
    with start_session(form_server.root, patient) as browser:
        csrf = csrf_of(browser.get("/app/form").text)
        answer = browser.post("/app/form", data=submit_fields(csrf, {"relationship": "40", "goals": "250"}))
        assert answer.status_code == 422
        assert answer.text.count(">Please place a mark on this line.</p>") == 2  # approach, overall
        assert "could not be used" in answer.text  # goals out of range
        assert 'aria-valuenow="40"' in answer.text  # what was given is kept
    assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []


def test_replayed_and_parallel_submissions_store_one_response(form_server, fhir, patient):
    with start_session(form_server.root, patient, encounter=f"{patient}-visit") as browser:
        fields = submit_fields(csrf_of(browser.get("/app/form").text), SRS_MARKS)
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda _: browser.post("/app/form", data=fields), range(6)))
        assert [a.status_code for a in answers] == [303] * 6
        replay = browser.post("/app/form", data=fields)
        assert replay.status_code == 303
        thanks = browser.get("/app/form")
        assert "hand the device back" in thanks.text and 'id="rating-form"' not in thanks.text
        late_draft = browser.post(
            "/app/form/draft", json={"answers": {}}, headers={"X-CSRF-Token": fields["csrf_token"]}
        )
        assert late_draft.status_code == 409
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert response["identifier"]["system"] == "http://fit-fhir.org/fhir/app-submission"
    assert response["encounter"] == {"reference": f"Encounter/{patient}-visit"}
    [observation] = search(fhir, "Observation", subject=f"Patient/{patient}")
    assert observation["valueQuantity"]["value"] == 36.4
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response['id']}"}]


def test_the_submission_hook_runs_in_the_same_transaction(form_server, fhir, patient):
    """``app.state.after_submission``: the outbox enqueues write-back there; if it fails, nothing is stored."""
    calls = []

    def failing_hook(session, write, response):
        calls.append((session.patient, response["resourceType"], response["id"]))
        raise RuntimeError("outbox unavailable")

    form_server.app.state.after_submission = failing_hook
    try:
        with start_session(form_server.root, patient) as browser:
            fields = submit_fields(csrf_of(browser.get("/app/form").text), SRS_MARKS)
            failed = browser.post("/app/form", data=fields)
            assert failed.status_code == 500
            assert search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}") == []
            assert 'id="rating-form"' in browser.get("/app/form").text  # not marked submitted either
            form_server.app.state.after_submission = lambda session, write, response: calls.append(response["id"])
            assert browser.post("/app/form", data=fields).status_code == 303
    finally:
        del form_server.app.state.after_submission
    [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert calls[0][:2] == (patient, "QuestionnaireResponse") and calls[-1] == response["id"]


@pytest.fixture(scope="module")
def licensed_server(database_url, backend):
    settings = Settings(
        database_url=database_url, app_dev_sessions=True, content_packs=str(CONTENT_PACK), _env_file=None
    )
    with ServerThread(settings, backend) as running:
        yield running


def test_a_loaded_content_pack_supplies_the_wording(licensed_server, patient):
    with start_session(licensed_server.root, patient) as browser:
        page = browser.get("/app/form").text
        assert "TEST PACK: relationship item label" in page and "TEST PACK: goals upper anchor" in page
        assert "TEST PACK: instructions placeholder" in page
        assert "Licensed wording loaded for" in page  # the pack's copyright line
        assert browser.post("/app/form", data=submit_fields(csrf_of(page), SRS_MARKS)).status_code == 303
    with httpx.Client(base_url=licensed_server.fhir_base) as fhir:
        [response] = search(fhir, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert response["questionnaire"] == "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2-testpack"

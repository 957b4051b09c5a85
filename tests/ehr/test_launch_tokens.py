"""Write-back with the launch's own token (issue 7, point 4: "with the launch token, or a Backend Services token
for that EHR, configured, when the user token cannot write or has expired").

A client answers the SRS through the rating form in a session launched from the EHR; the form's after_submission
hook queues the delivery in the submission's transaction, with the session (never the token) as the row's token
reference.  The worker writes with the session's token; an expired one is not used, and one the EHR refuses
(read-only) is replaced by a Backend Services token within the same attempt.  The tokens are real: issued by the
EHR's authorization server for requests reaching it through the proxy.
"""

from __future__ import annotations

from datetime import timedelta

from fhir_server.ehr import outbox
from fhir_server.smart.sessions import AppSession
from fhir_server.store.records import utc_now
from tests.ehr.world import LOW, SRS, in_ehr_once, new_patient, rows_for, wait_for

NAMES = ("relationship", "goals", "approach", "overall")


def _launched(local, ehr, proxy, registration, uid: str, scope: str, valid_for: timedelta) -> AppSession:
    """What the launch leaves in the session store: the EHR, its token and the context."""
    patient, encounter = new_patient(ehr, uid)
    _, session = local.state.app_sessions.create_session(
        ehr_id=registration.id,
        launch_iss=registration.issuer,
        access_token=ehr.mint(scope, proxy.root),
        token_expires_at=utc_now() + valid_for,
        patient=patient,
        encounter=encounter,
        questionnaire=SRS,
    )
    return session


def _answer(local, session: AppSession) -> str:
    fields = {f"answer.{name}": str(mark) for name, mark in zip(NAMES, LOW, strict=True)}
    outcome = local.state.rating_form.submit(session, fields, local.state.after_submission)
    assert not outcome.errors and outcome.response_id
    return outcome.response_id


def _token_requests(proxy) -> list[dict]:
    return [r for r in proxy.requests() if r["method"] == "POST" and r["path"].endswith("/token")]


def test_the_launch_token_writes_while_the_session_lives(ours, ehr, local, proxy, registration, uid):
    session = _launched(local, ehr, proxy, registration, uid, "system/*.cruds", timedelta(minutes=30))
    response_id = _answer(local, session)
    [row] = rows_for(local, response_id)
    assert row.token_ref == session.session_hash and session.access_token not in str(row)
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)
    assert _token_requests(proxy) == []  # no Backend Services token was needed


def test_an_expired_launch_token_is_not_used(ours, ehr, local, proxy, registration, uid):
    session = _launched(local, ehr, proxy, registration, uid, "system/*.cruds", timedelta(minutes=-1))
    response_id = _answer(local, session)
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)
    writes = [r for r in proxy.requests() if r["method"] == "POST" and r["path"] == "/fhir"]
    assert [r["status"] for r in writes] == [200]  # straight to Backend Services, never refused
    assert len(_token_requests(proxy)) == 1


def test_a_launch_token_that_cannot_write_gives_way_to_backend_services(ours, ehr, local, proxy, registration, uid):
    session = _launched(local, ehr, proxy, registration, uid, "system/*.rs", timedelta(minutes=30))
    response_id = _answer(local, session)
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)
    requests = proxy.requests()
    order = [
        ("write", r["status"]) if r["path"] == "/fhir" else ("token", r["status"])
        for r in requests
        if r["method"] == "POST" and (r["path"] == "/fhir" or r["path"].endswith("/token"))
    ]
    assert order == [("write", 403), ("token", 200), ("write", 200)]
    assert rows_for(local, response_id)[0].attempts == 1  # one attempt, two tokens


def test_a_session_not_launched_from_an_ehr_queues_nothing(local, uid):
    _, session = local.state.app_sessions.create_session(patient=f"p-{uid}", questionnaire=SRS)
    response_id = _answer(local, session)
    assert rows_for(local, response_id) == []
    assert outbox.delivery_state(local.state.engine, response_id) is None

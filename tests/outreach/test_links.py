"""A form link's life, on both databases, through real processes (tests/outreach/world.py): sent, opened once behind
the identity check, completed (the Task closed, the response scored, no more reminders), reminded, expired, reused,
tampered with, guessed at, and sent while the mail server is down."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.outreach.world import BIRTH_YEAR, SITE, SRS, LinkWorld, until
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database


@pytest.fixture(scope="module")
def world(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkWorld]:
    folder = tmp_path_factory.mktemp(f"links-{backend}")
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url:
        running = LinkWorld(url, folder, f"links-{backend}")
        running.start()
        try:
            yield running
        finally:
            running.stop()


def address() -> str:
    from uuid import uuid4

    return f"client-{uuid4().hex[:10]}@mail.test"


def sent_link(world: LinkWorld, **fields: object) -> tuple[str, str, str]:
    """A client, a Task for them by email, and the link that arrives: (patient, task id, link)."""
    patient, to = world.patient(), address()
    answer = world.ask(patient, address=to, **fields)
    assert answer.status_code == 201, answer.text
    (message,) = world.wait_for_mails(to)
    return patient, answer.json()["id"], world.link_in(message)


def test_the_link_opens_the_form_once_and_the_response_closes_the_task(world: LinkWorld) -> None:
    patient, to = world.patient(name=[{"family": "Zabriskie", "given": ["Ottoline"]}]), address()
    answer = world.ask(patient, address=to)
    assert answer.status_code == 201, answer.text
    task_id = answer.json()["id"]
    (message,) = world.wait_for_mails(to)
    link = world.link_in(message)

    # The message: the site, the link and its expiry, in English with a plain-text part; nothing about the client.
    assert SITE in str(message["Subject"]) and message["Content-Language"] == "en"
    whole = message.as_string()
    for private in (patient, "Zabriskie", "Ottoline", "Session Rating", "SRS", task_id):
        assert private not in whole
    assert patient not in link and task_id not in link
    assert "year of birth" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message.get_body(("html",)) is not None

    with world.browser_client() as browser:
        shown = browser.get(link.removeprefix(world.server.root))
        assert shown.status_code == 200 and "Your year of birth" in shown.text
        assert shown.headers["referrer-policy"] == "no-referrer" and "noindex" in shown.headers["x-robots-tag"]
        assert "Zabriskie" not in shown.text  # nothing about the client before the check
        assert world.open_link(browser, link, "1991").status_code == 422  # wrong: the page again
        opened = world.open_link(browser, link)
        assert opened.status_code == 303 and opened.headers["location"] == "/app/form", opened.text
        sent = world.fill_srs(browser)
        assert sent.status_code == 303, sent.text
        assert "Thank you" in browser.get("/app/form").text

    task = world.task(task_id)
    assert task["status"] == "completed"
    (output,) = task["output"]
    response_ref = output["valueReference"]["reference"]
    with world.fhir() as fhir:
        response = fhir.get(f"/{response_ref}").json()
        assert response["subject"]["reference"] == f"Patient/{patient}"
        assert response["questionnaire"].startswith(SRS + "|")
        scores = fhir.get("/Observation", params={"derived-from": response_ref}).json()
        assert scores.get("total", len(scores.get("entry", []))) >= 1
    # Used: the same link refuses now, whatever the answer.
    with world.browser_client() as other:
        assert other.get(link.removeprefix(world.server.root)).status_code == 410
        assert world.open_link(other, link).status_code == 410


def test_no_reminder_after_completion_and_a_reminder_before(world: LinkWorld) -> None:
    _, task_id, link = sent_link(world)
    reminder = until(lambda: world.mails_with(link)[1:], "a reminder")[0]
    assert "Reminder" in str(reminder["Subject"])
    with world.browser_client() as browser:
        assert world.open_link(browser, link).status_code == 303
        assert world.fill_srs(browser).status_code == 303
    assert world.task(task_id)["status"] == "completed"
    # The second reminder was due 6 s after the first: it is skipped, not sent.
    rows = until(lambda: world.message_rows(task_id, settled=True), "the reminders to be settled")
    assert sorted(r["status"] for r in rows) == ["sent", "sent", "skipped"]
    assert len(world.mails_with(link)) == 2


def test_a_reminder_after_an_unfinished_visit_carries_a_new_link(world: LinkWorld) -> None:
    _, task_id, link = sent_link(world)
    with world.browser_client() as browser:
        assert world.open_link(browser, link).status_code == 303  # opened, never sent
    to = world.task(task_id)["input"][1]["valueContactPoint"]["value"]
    reminder = world.wait_for_mails(to, 2)[1]
    fresh = world.link_in(reminder)
    assert fresh != link
    with world.browser_client() as browser:
        assert browser.get(link.removeprefix(world.server.root)).status_code == 404  # the old token is gone
        assert world.open_link(browser, fresh).status_code == 303
        assert world.fill_srs(browser).status_code == 303
    assert world.task(task_id)["status"] == "completed"


def test_a_tampered_link_finds_nothing(world: LinkWorld) -> None:
    _, _, link = sent_link(world)
    token = link.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with world.browser_client() as browser:
        for bad in (flipped, token[:-1], token + "x", "x" * 43):
            assert browser.get(f"/app/l/{bad}").status_code == 404
            assert browser.post(f"/app/l/{bad}", data={"birth_year": BIRTH_YEAR}).status_code == 404
        # ... and the real link still works
        assert world.open_link(browser, link).status_code == 303


def test_wrong_answers_are_throttled(world: LinkWorld) -> None:
    _, _, link = sent_link(world)
    with world.browser_client() as browser:
        for year in ("1980", "1981", "1982"):  # FHIR_SERVER_LINK_CHECK_ATTEMPTS=3
            assert world.open_link(browser, link, year).status_code == 422
        refused = world.open_link(browser, link)  # even the right answer now
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many attempts" in refused.text


def test_an_expired_link_and_a_cancelled_task_refuse(world: LinkWorld) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="seconds")
    _, task_id, link = sent_link(world, restriction={"period": {"end": soon}})
    with world.browser_client() as browser:
        path = link.removeprefix(world.server.root)
        expired = until(lambda: (r := browser.get(path)).status_code == 410 and r, "the link to expire", 20)
        assert "expired" in expired.text or "no longer needed" in expired.text  # the sweep may have been first
        assert world.open_link(browser, link).status_code == 410
    # The sweep cancels the request that nobody answered in time, saying why.
    task = until(lambda: (t := world.task(task_id))["status"] == "cancelled" and t, "the expiry sweep", 20)
    assert task["statusReason"]["coding"][0]["code"] == "expired"

    _, task_id, link = sent_link(world)
    task = world.task(task_id)
    with world.fhir() as fhir:
        assert fhir.put(f"/Task/{task_id}", json={**task, "status": "cancelled"}).status_code == 200
    with world.browser_client() as browser:
        closed = browser.get(link.removeprefix(world.server.root))
        assert closed.status_code == 410 and "no longer needed" in closed.text


def test_a_task_the_server_cannot_send_is_refused_and_stores_nothing(world: LinkWorld) -> None:
    no_birth_date = world.patient(birthDate=None)
    refused = world.ask(no_birth_date, address=address())
    assert refused.status_code == 422 and "birthDate" in refused.text
    assert refused.json()["issue"][0]["expression"] == ["Task.for"]
    no_address = world.patient()
    refused = world.ask(no_address)  # no address given, none in the Patient's telecom
    assert refused.status_code == 422 and "No email address" in refused.text
    with world.fhir() as fhir:
        for patient in (no_birth_date, no_address):
            assert fhir.get("/Task", params={"patient": f"Patient/{patient}"}).json().get("total", 0) == 0


def test_the_address_may_come_from_the_patient_and_the_language_from_communication(world: LinkWorld) -> None:
    to = address()
    french = {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-CA"}]}, "preferred": True}
    patient = world.patient(telecom=[{"system": "email", "value": to}], communication=[french])
    assert world.ask(patient).status_code == 201
    (message,) = world.wait_for_mails(to)
    assert message["Content-Language"] == "fr" and "questionnaire" in str(message["Subject"])
    assert "Bonjour" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    with world.browser_client() as browser:
        page = browser.get(world.link_in(message).removeprefix(world.server.root))
        assert 'lang="fr"' in page.text and "année de naissance" in page.text


def test_a_link_by_sms(world: LinkWorld) -> None:
    patient, number = world.patient(), "+15555550123"
    assert world.ask(patient, channel="sms", address=number).status_code == 201
    (text,) = until(lambda: world.texts_to(number), "the text message")
    assert SITE in text["text"] and "/app/l/" in text["text"] and patient not in text["text"]


def test_mail_server_down_then_up_delivers_once(world: LinkWorld) -> None:
    world.mail.stop()
    try:
        patient, to = world.patient(), address()
        answer = world.ask(patient, address=to)
        assert answer.status_code == 201
        until(lambda: world.message_rows(answer.json()["id"])[0]["attempts"] >= 2, "two failed attempts")
    finally:
        world.mail.start()
    messages = world.wait_for_mails(to)
    until(lambda: world.message_rows(answer.json()["id"])[0]["status"] == "sent", "the row marked sent")
    assert len(world.mails_to(to)) == len(messages) == 1


def test_a_link_session_reaches_the_clients_form_and_nothing_of_the_clinicians(world: LinkWorld) -> None:
    """What the link opens is the client's form: none of the clinician's pages (they show the therapist's ratings,
    concerns in clinicians' words and other clients), nor another measure than the one asked for."""
    _, task_id, link = sent_link(world)
    with world.browser_client() as browser:
        assert world.open_link(browser, link).status_code == 303
        for page in ("/app/clinician", "/app/result", "/app/concordance", "/app/supervision", "/app/supervision.csv",
                     "/app/therapist-rating", "/app/choose"):  # fmt: skip
            answer = browser.get(page)
            assert answer.status_code in (403, 404, 405), (page, answer.status_code)
        posted = browser.post("/app/clinician/requests", data={"measure": "ors", "channel": "email", "csrf_token": "x"})
        assert posted.status_code in (403, 404), posted.status_code
        form = browser.get("/app/form")
        assert form.status_code == 200 and 'data-link-id="relationship"' in form.text
    assert world.task(task_id)["status"] == "requested"  # nothing of the above changed the request

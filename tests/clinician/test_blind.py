"""Blind by default (issue 21, clinician/blind.py), through the API on both databases: the client's latest SRS is
left out of the clinician view — total, items, chart point, table row, the Flags it raised — while its session (a
local Encounter) has no current therapist's rating and it is less than a day old; the therapist's rating brings it
back.  A rating without an Encounter, or a day old, is shown at once; a rating entered in error is no rating; and
a site that turns blindness off sees it at once, the form still offered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.clinician.blind import Unpaired, Unrated
from fhir_server.clinician.view import ClinicianView, build_view
from fhir_server.config import Settings
from fhir_server.web.form_pages import templates
from tests.api.fhir import put
from tests.scoring.test_concordance import therapist
from tests.scoring.test_pipeline import srs, submit
from tests.support.server import RunningServer, ServerThread

TODAY_MARKS = (71, 64, 83, 55)  # 7.1 + 6.4 + 8.3 + 5.5 = 27.3: below the cutoff, so it raises a concern
TODAY = "27.3"


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat(timespec="seconds")


def _session(uid: str, name: str) -> dict:
    return {"encounter": {"reference": f"Encounter/{uid}-{name}"}}


def _page(view: ClinicianView) -> str:
    return templates.get_template("app/clinician.html").render(
        view=view, banner=None, csrf_token="x", version="test", request=None, rating=view.rating
    )


def _history_and_today(client, uid: str) -> dict:
    """Last week's session rated by both, and today's SRS (its session not rated by the therapist yet)."""
    submit(client, srs(uid, (90, 90, 90, 90), _ago(days=7), **_session(uid, "last-week")))  # 36.0
    submit(client, therapist(uid, (92, 92, 92, 92), _ago(days=7), **_session(uid, "last-week")))  # 36.8
    return submit(client, srs(uid, TODAY_MARKS, _ago(minutes=50), **_session(uid, "today")))


def test_todays_srs_waits_for_the_therapists_rating(server, client, uid):
    today = _history_and_today(client, uid)
    fhir = server.app.state.fhir
    view = build_view(fhir, uid, None)
    assert isinstance(view.rating, Unrated) and view.rating.hidden
    assert view.rating.encounter == f"{uid}-today"
    assert view.rating.response == f"QuestionnaireResponse/{today['id']}"
    assert [str(p.value) for p in view.srs.points] == ["36.0"]  # last week's only
    assert view.latest_items == [] or all(name != "SRS" for name, _ in view.latest_items)
    assert all(str(r.value) != TODAY for r in view.rows)
    assert not any(TODAY in f.message for f, _ in view.flags)
    page = _page(view)
    assert TODAY not in page and "7.1" not in page and "5.5" not in page
    assert "Before you see today's rating: how do you think it went for your client?" in page
    assert 'action="/app/therapist-rating"' in page

    submit(client, therapist(uid, (80, 80, 80, 80), _ago(minutes=5), **_session(uid, "today")))  # 32.0
    view = build_view(fhir, uid, None)
    assert view.rating is None
    assert [str(p.value) for p in view.srs.points] == ["36.0", TODAY]
    assert any(TODAY in f.message for f, _ in view.flags)  # the concern it raised, quoting it
    page = _page(view)
    assert TODAY in page and "Before you see today" not in page


def test_a_rating_entered_in_error_is_no_rating(server, client, uid):
    _history_and_today(client, uid)
    rating = submit(client, therapist(uid, (80, 80, 80, 80), _ago(minutes=5), **_session(uid, "today")))
    assert build_view(server.app.state.fhir, uid, None).rating is None
    assert put(client, f"/QuestionnaireResponse/{rating['id']}", {**rating, "status": "entered-in-error"}).is_success
    view = build_view(server.app.state.fhir, uid, None)
    assert isinstance(view.rating, Unrated) and TODAY not in _page(view)


def test_another_sessions_rating_does_not_count(server, client, uid):
    _history_and_today(client, uid)
    submit(client, therapist(uid, (80, 80, 80, 80), _ago(minutes=5), **_session(uid, "another")))
    view = build_view(server.app.state.fhir, uid, None)
    assert isinstance(view.rating, Unrated) and TODAY not in _page(view)


def test_a_rating_without_a_session_is_shown_and_the_page_says_why(server, client, uid):
    alone = srs(uid, TODAY_MARKS, _ago(minutes=50))
    del alone["encounter"]
    submit(client, alone)
    view = build_view(server.app.state.fhir, uid, None)
    assert isinstance(view.rating, Unpaired)
    page = _page(view)
    assert TODAY in page and "not filed under a session in\n    the EHR (no Encounter)" in page
    assert "therapist-rating" not in page


def test_a_day_old_rating_is_past_the_moment(server, client, uid):
    submit(client, srs(uid, TODAY_MARKS, _ago(hours=25), **_session(uid, "yesterday")))
    view = build_view(server.app.state.fhir, uid, None)
    assert view.rating is None and TODAY in _page(view)


@pytest.fixture(scope="module")
def not_blind(database_url: str, backend: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_url, therapist_rating_blind=False, _env_file=None)
    with ServerThread(settings, backend) as running:
        yield running


def test_a_site_that_turns_blindness_off_sees_it_at_once(not_blind, client, uid):
    _history_and_today(client, uid)
    view = build_view(not_blind.app.state.fhir, uid, None)
    assert isinstance(view.rating, Unrated) and not view.rating.hidden
    page = _page(view)
    assert TODAY in page and 'action="/app/therapist-rating"' in page  # shown, and the form still offered
    assert "Until then this page leaves out" not in page

"""``read_app_context`` (issue 17, finding 2): the appContext of a CDS Hooks card's SMART link, as the EHR's token
response carries it, checked against what the app offers.  A valid view, measure (resolved by the server's own
measures library) and Flag come through; every invalid kind is ignored with a warning on ``fhir_server.smart``
that carries no more than names and ids, and the launch goes on as without it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from fhir_server.smart.app_context import MAX_CHARS, AppContext, read_app_context
from tests.support.server import RunningServer

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors|"


@pytest.fixture
def resolve(server: RunningServer) -> Callable[[str], str]:
    """The real resolver of the running server (its library), as the launch callback passes it."""
    return server.app.state.rating_form.resolve_measure


def read(value: object, resolve: Callable[[str], str], launch_view: str = "form") -> AppContext:
    return read_app_context(value, launch_view=launch_view, resolve_measure=resolve)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fhir_server.smart" and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fhir_server.smart")


def test_no_app_context_is_nothing_and_says_nothing(resolve, caplog):
    assert read(None, resolve) == AppContext()
    assert warnings(caplog) == []


def test_our_cards_contexts(resolve, caplog):
    form = read('{"view":"form","measure":"ors"}', resolve)
    assert form.view == "form" and form.measure.startswith(ORS) and form.flag is None
    clinician = read('{"view":"clinician","flag":"Flag/0192f0c4-7a1b-7c3d-8e9f-0a1b2c3d4e5f"}', resolve)
    assert clinician == AppContext(view="clinician", flag="0192f0c4-7a1b-7c3d-8e9f-0a1b2c3d4e5f")
    assert warnings(caplog) == []


def test_an_object_as_some_ehrs_send_it(resolve, caplog):
    assert read({"view": "form", "measure": "srs"}, resolve).measure.startswith(SRS)
    assert read({"view": "clinician"}, resolve) == AppContext(view="clinician")
    assert warnings(caplog) == []


def test_measure_names_and_canonicals_the_library_knows(resolve):
    assert read('{"measure":"wai-sr"}', resolve).measure.startswith("http://fit-fhir.org/fhir/Questionnaire/wai-sr|")
    assert read('{"view":"form","measure":"http://fit-fhir.org/fhir/Questionnaire/srs"}', resolve).measure.startswith(
        SRS
    )


def test_without_a_view_the_keys_follow_the_launch_view(resolve, caplog):
    assert read('{"flag":"Flag/f1"}', resolve, launch_view="clinician") == AppContext(flag="f1")
    assert read('{"measure":"srs"}', resolve, launch_view="form").measure.startswith(SRS)
    assert read('{"flag":"Flag/f1"}', resolve, launch_view="form") == AppContext()
    assert "only the clinician view shows Flags" in warnings(caplog)[-1]


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("not json at all {", "appContext ignored: not JSON"),
        ("", "appContext ignored: not JSON"),
        ('["view","form"]', "appContext ignored: a JSON array, not an object"),
        ('"form"', "appContext ignored: a JSON string, not an object"),
        ("42", "appContext ignored: a JSON number, not an object"),
        (17, "appContext ignored: a JSON number, neither a string nor an object"),
        (["form"], "appContext ignored: a JSON array, neither a string nor an object"),
        ('{"view":"billing","measure":"srs"}', "appContext ignored: unknown view 'billing'"),
        ('{"view":["form"]}', "appContext ignored: unknown view (a JSON array)"),
        ('{"view":"form","measure":"' + "x" * MAX_CHARS + '"}', f"appContext ignored: longer than {MAX_CHARS}"),
        ({"view": "form", "measure": "x" * MAX_CHARS}, f"appContext ignored: longer than {MAX_CHARS}"),
    ],
)
def test_an_unusable_app_context_is_ignored_whole(resolve, caplog, value, logged):
    assert read(value, resolve) == AppContext()
    assert any(m.startswith(logged) for m in warnings(caplog)), warnings(caplog)


@pytest.mark.parametrize(
    ("value", "expected", "logged"),
    [
        ('{"view":"form","measure":"ycors-nope"}', AppContext(view="form"), "measure ignored: no measure 'ycors-nope'"),
        (
            '{"view":"form","measure":""}',
            AppContext(view="form"),
            "measure ignored: (a string of other characters) is not",
        ),
        (
            '{"view":"form","measure":7}',
            AppContext(view="form"),
            "measure ignored: (a JSON number) is not a measure name",
        ),
        ('{"view":"clinician","measure":"srs"}', AppContext(view="clinician"), "measure ignored: only the form view"),
        ('{"view":"clinician","flag":"Flag/"}', AppContext(view="clinician"), "flag ignored: 'Flag/' is not"),
        ('{"view":"clinician","flag":"f1"}', AppContext(view="clinician"), "flag ignored: 'f1' is not Flag/<id>"),
        ('{"view":"clinician","flag":"Observation/f1"}', AppContext(view="clinician"), "flag ignored"),
        (
            '{"view":"clinician","flag":"Flag/a b"}',
            AppContext(view="clinician"),
            "flag ignored: (a string of other characters)",
        ),
        ('{"view":"clinician","flag":"Flag/' + "a" * 65 + '"}', AppContext(view="clinician"), "flag ignored"),
        ('{"view":"clinician","flag":"Flag/f1/_history/2"}', AppContext(view="clinician"), "flag ignored"),
        ('{"view":"clinician","flag":{"reference":"Flag/f1"}}', AppContext(view="clinician"), "flag ignored"),
        ('{"view":"form","flag":"Flag/f1"}', AppContext(view="form"), "flag ignored: only the clinician view"),
    ],
)
def test_an_invalid_measure_or_flag_is_ignored_and_the_view_kept(resolve, caplog, value, expected, logged):
    assert read(value, resolve) == expected
    assert any(logged in m for m in warnings(caplog)), warnings(caplog)


def test_unknown_keys_are_ignored_and_the_rest_honoured(resolve, caplog):
    found = read('{"view":"clinician","flag":"Flag/f9","colour":"blue","Jane Doe":1}', resolve)
    assert found == AppContext(view="clinician", flag="f9")
    (message,) = warnings(caplog)
    assert message == "appContext: unknown keys ignored: 'colour', 1 more"  # a key like a name is only counted


def test_the_log_carries_no_patient_data(resolve, caplog):
    """A value that is not a name or an id (spaces: could be someone's name) is described, never quoted."""
    read('{"view":"Jane Doe, born 1990-04-02"}', resolve)
    read('{"view":"form","measure":"Jane Doe"}', resolve)
    read('{"view":"clinician","flag":"Flag/Jane Doe"}', resolve)
    assert len(warnings(caplog)) == 3
    assert "Jane" not in caplog.text and "1990" not in caplog.text


def test_a_supervision_launch_takes_no_app_context(resolve, caplog):
    """The supervision page is no patient's and its token was asked for reports: a card's view, measure or Flag
    cannot turn it into a form or a chart (nor does any appContext open the supervision page)."""
    assert read('{"view":"form","measure":"srs"}', resolve, launch_view="supervision") == AppContext()
    assert warnings(caplog) == ["appContext ignored: the 'supervision' view takes none"]
    assert read('{"view":"supervision"}', resolve) == AppContext()

"""Another rater's series stays apart in everything a clinician sees: the alliance summary, the clinician view
(its own table, never the client's chart), the CDS cards (one per concern and rater, saying who rated) and
acknowledging a concern (closes the same rater's, never the client's own)."""

from __future__ import annotations

from datetime import date

from fhir_server.cds_hooks.cards import build_cards
from fhir_server.clinician.view import acknowledge, build_view
from fhir_server.operations.alliance_summary import summary_for
from fhir_server.scoring.summary import latest_flags, to_parameters
from fhir_server.web.form_pages import templates
from tests.scoring.test_clinical_sequences import by_code, ors, rater_of
from tests.scoring.test_pipeline import submit


def _client_and_mother(client, uid: str) -> None:
    submit(client, ors(uid, (50,) * 4, "2026-03-02T10:00:00Z"))  # the client: 20.0, in the clinical range
    submit(client, ors(uid, (45,) * 4, "2026-03-03T10:00:00Z", rater="Mother"))  # the mother: 18.0


def test_the_summary_and_cards_keep_each_raters_concern(server, client, uid):
    _client_and_mother(client, uid)
    fhir = server.app.state.fhir
    summary = summary_for(fhir, uid)
    concerns = {(f.code, f.series) for f, _ in latest_flags(summary.flags)}
    assert concerns == {("ors-below-cutoff", "self"), ("ors-below-cutoff", "other:mother")}
    parameters = to_parameters(summary)
    series = [
        next(p["valueString"] for p in entry["part"] if p["name"] == "series")
        for entry in parameters["parameter"]
        if entry["name"] == "active-flag"
    ]
    assert sorted(series) == ["other:mother", "self"]
    cards = build_cards(
        summary,
        service="fit-alliance",
        hook="patient-view",
        today=date(2026, 3, 3),
        app_url="https://app",
        source_url="https://src",
    )
    summaries = sorted(c["summary"] for c in cards if "ORS not yet" not in c["summary"])
    assert summaries[0].startswith("ORS 20: in the clinical range")
    assert summaries[1].startswith("Rated by mother, not the client: ORS 18")


def test_the_clinician_view_shows_other_raters_apart(server, client, uid):
    _client_and_mother(client, uid)
    view = build_view(server.app.state.fhir, uid, None)
    assert view.ors is not None and view.ors.series == "self" and [p.value for p in view.ors.points] == [20]
    assert [(m.code, m.rater, [p.value for p in m.points]) for m in view.others] == [("ors-total", "mother", [18])]
    page = templates.get_template("app/clinician.html").render(
        view=view, banner=None, csrf_token="x", version="test", request=None
    )
    assert "Rated by someone else" in page and "<td>mother</td>" in page
    assert "(rated by mother)" in page  # on the mother's concern


def test_acknowledging_closes_only_the_same_raters_concern(server, client, uid):
    _client_and_mother(client, uid)
    own = next(f for f in by_code(client, uid)["ors-below-cutoff"] if rater_of(f) == "self")
    acknowledge(server.app.state.fhir, uid, own["id"], "Practitioner/p1", None, None)
    left = by_code(client, uid)["ors-below-cutoff"]
    assert [rater_of(f) for f in left] == ["other:mother"]

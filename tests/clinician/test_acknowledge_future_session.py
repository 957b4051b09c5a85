"""A session dated ahead of this server's clock (an EHR's clock running fast, a time zone typed wrong) raises a Flag
whose period starts in the future.  Acknowledging it now used to set ``period.end`` before ``period.start``, which
the Flag's own validation refuses (per-1), so the clinician could not acknowledge the concern at all.  It now ends
as it starts, and the acknowledgement still says when the clinician acknowledged it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_server.clinician.view import ACKNOWLEDGEMENT, acknowledge
from fhir_server.scoring.flag_state import period_ended
from tests.scoring.test_clinical_sequences import by_code, ors
from tests.scoring.test_pipeline import submit


def test_a_concern_from_a_session_dated_ahead_of_the_clock_can_be_acknowledged(server, client, uid):
    ahead = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    submit(client, ors(uid, (50,) * 4, ahead.isoformat().replace("+00:00", "Z")))  # 20.0: in the clinical range
    (raised,) = by_code(client, uid)["ors-below-cutoff"]
    start = raised["period"]["start"]
    assert datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.now(UTC)

    acknowledge(server.app.state.fhir, uid, raised["id"], "Practitioner/p1", None, None)

    closed = client.get(f"/Flag/{raised['id']}").json()
    assert closed["status"] == "inactive"
    assert closed["period"] == {"start": start, "end": start}
    (note,) = [e for e in closed["extension"] if e["url"] == ACKNOWLEDGEMENT]
    at = next(part["valueDateTime"] for part in note["extension"] if part["url"] == "at")
    assert datetime.fromisoformat(at.replace("Z", "+00:00")) <= datetime.now(UTC)  # when it was acknowledged
    assert "ors-below-cutoff" not in by_code(client, uid)  # no longer active


def test_a_period_ends_at_the_instant_given_unless_that_is_before_its_start():
    assert period_ended({"start": "2026-03-02T10:00:00Z"}, "2026-03-09T10:00:00Z") == {
        "start": "2026-03-02T10:00:00Z",
        "end": "2026-03-09T10:00:00Z",
    }
    # offsets compared as instants: 11:00+02:00 is 09:00Z, before the start
    assert period_ended({"start": "2026-03-02T10:00:00Z"}, "2026-03-02T11:00:00+02:00")["end"] == "2026-03-02T10:00:00Z"
    assert period_ended(None, "2026-03-02T10:00:00Z") == {"end": "2026-03-02T10:00:00Z"}

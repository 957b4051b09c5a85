"""Who and where (issue 20, point 1): every scored session's results carry the clinician and the program it belongs
to, resolved when it was scored (fhir_server/scoring/attribution.py), searchable, and never rewritten when a
clinician or an encounter changes later.  The rules in isolation, then through the API on both databases."""

from __future__ import annotations

from typing import Any

from fhir_server.scoring.attribution import CLINICIAN, PROGRAM, Attribution, from_encounter, reference, resolve
from tests.api.fhir import assert_outcome, post, put
from tests.scoring.test_pipeline import srs, submit

AMBULATORY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
LOW = (20, 25, 30, 20)  # under the SRS cutoff: an alliance Flag too


def participant(who: str, code: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"individual": {"reference": who}}
    if code:
        found["type"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                      "code": code}]}]  # fmt: skip
    return found


def encounter(participants: list[dict[str, Any]], provider: str | None = None, **extra: Any) -> dict[str, Any]:
    found = {"resourceType": "Encounter", "status": "finished", "class": AMBULATORY, "participant": participants}
    found.update(extra)
    if provider:
        found["serviceProvider"] = {"reference": provider}
    return found


# -- the rules ---------------------------------------------------------------------------------------------------
def test_references_are_typed_and_relative():
    assert reference({"reference": "Practitioner/7"}, ("Practitioner",)) == "Practitioner/7"
    assert reference("https://ehr.example/fhir/Practitioner/7", ("Practitioner",)) == "Practitioner/7"
    assert reference({"reference": "Organization/7"}, ("Practitioner",)) is None
    assert reference({"reference": "Practitioner/7/_history/2"}, ("Practitioner",)) is None
    assert reference({"display": "Dr Who"}, ("Practitioner",)) is None
    assert reference(42, ("Practitioner",)) is None


def test_the_performer_of_the_encounter_comes_first_then_the_attender():
    found = from_encounter(
        encounter(
            [
                participant("Practitioner/student", "PART"),
                participant("Practitioner/lead", "PPRF"),
                participant("Practitioner/second", "ATND"),
                participant("RelatedPerson/mum"),
            ],
            "Organization/program-a",
        )
    )
    assert found == Attribution("Practitioner/lead", "Organization/program-a")
    untyped = from_encounter(encounter([participant("RelatedPerson/mum"), participant("PractitionerRole/r1")]))
    assert untyped == Attribution("PractitionerRole/r1", None)


def test_precedence_declared_then_context_then_encounter_then_user_then_role():
    store = {
        "Encounter/e1": encounter(
            [participant("Practitioner/p-enc", "PPRF")], episodeOfCare=[{"reference": "EpisodeOfCare/ep1"}]
        ),
        "EpisodeOfCare/ep1": {
            "resourceType": "EpisodeOfCare",
            "managingOrganization": {"reference": "Organization/ep"},
        },
        "PractitionerRole/r1": {"resourceType": "PractitionerRole", "organization": {"reference": "Organization/role"}},
    }
    read = store.get
    response: dict[str, Any] = {"encounter": {"reference": "Encounter/e1"}}
    # the encounter's performer, the episode's organisation
    assert resolve(response, read) == Attribution("Practitioner/p-enc", "Organization/ep")
    # a PractitionerRole in the launch context names the clinician; its organisation is only the last resort
    assert resolve(response, read, context=[{"reference": "PractitionerRole/r1"}]) == Attribution(
        "PractitionerRole/r1", "Organization/ep"
    )
    assert resolve({}, read, context=["PractitionerRole/r1"]) == Attribution("PractitionerRole/r1", "Organization/role")
    # the signed-in user when nothing else names a clinician; a Patient user is no clinician
    assert resolve({}, read, user="Practitioner/me") == Attribution("Practitioner/me", None)
    assert resolve({}, read, user="Patient/me") == Attribution(None, None)
    # what the response declares wins over all of it
    stated = {**response, "extension": Attribution("Practitioner/said", "Organization/said").extensions()}
    assert resolve(stated, read, context=["Organization/ctx"], user="Practitioner/me") == Attribution(
        "Practitioner/said", "Organization/said"
    )
    # an Organization in the launch context names the program
    assert resolve(response, read, context=["Organization/ctx"]).program == "Organization/ctx"


# -- through the API ---------------------------------------------------------------------------------------------
def stamped(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    found = {e["url"]: e["valueReference"]["reference"] for e in resource.get("extension", ()) if "valueReference" in e}
    return found.get(CLINICIAN), found.get(PROGRAM)


def results_of(client, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The Observations and Flags the scoring wrote from ``response`` (its derived ids start with the response's)."""
    reference = f"QuestionnaireResponse/{response['id']}"
    observations = client.get("/Observation", params={"derived-from": reference, "_count": "50"}).json()
    flags = client.get("/Flag", params={"patient": response["subject"]["reference"], "_count": "50"}).json()
    found = [e["resource"] for e in observations.get("entry", [])]
    return found + [e["resource"] for e in flags.get("entry", []) if e["resource"]["id"].startswith(response["id"])]


def test_results_carry_the_encounters_clinician_and_program_and_keep_them(client, uid):
    program, other_program, clinician = f"prog-{uid}", f"other-{uid}", f"clin-{uid}"
    organization = {"resourceType": "Organization", "id": program, "name": "Program A"}
    assert put(client, f"/Organization/{program}", organization).status_code == 201
    visit = encounter([participant(f"Practitioner/{clinician}", "PPRF")], f"Organization/{program}")
    assert put(client, f"/Encounter/{uid}-visit", {**visit, "id": f"{uid}-visit"}).status_code == 201

    first = submit(client, srs(uid, LOW, "2026-11-02T10:00:00+00:00"))
    written = results_of(client, first)
    kinds = sorted(r["resourceType"] for r in written)
    assert kinds.count("Observation") >= 1 and "Flag" in kinds, kinds
    assert {stamped(r) for r in written} == {(f"Practitioner/{clinician}", f"Organization/{program}")}
    assert "extension" not in first  # the client's response is stored as sent

    by_program = client.get("/Observation", params={"session-program": f"Organization/{program}"}).json()
    assert {e["resource"]["id"] for e in by_program["entry"]} == {
        r["id"] for r in written if r["resourceType"] == "Observation"
    }
    flags = client.get("/Flag", params={"session-clinician": f"Practitioner/{clinician}", "status": "active"}).json()
    assert [e["resource"]["id"] for e in flags["entry"]] == [r["id"] for r in written if r["resourceType"] == "Flag"]

    # The clinician moves to another program: the next session goes there, the earlier one stays where it was.
    moved = encounter([participant(f"Practitioner/{clinician}", "PPRF")], f"Organization/{other_program}")
    assert put(client, f"/Encounter/{uid}-visit", {**moved, "id": f"{uid}-visit"}).status_code == 200
    second = submit(client, srs(uid, (90, 90, 90, 90), "2026-11-09T10:00:00+00:00"))
    assert {stamped(r) for r in results_of(client, second)} == {
        (f"Practitioner/{clinician}", f"Organization/{other_program}")
    }
    assert {stamped(r) for r in results_of(client, first)} == {(f"Practitioner/{clinician}", f"Organization/{program}")}


def test_what_the_response_declares_wins_and_a_session_without_context_has_none(client, uid):
    said = Attribution(f"PractitionerRole/{uid}", f"Organization/{uid}")
    declared = submit(client, srs(uid, LOW, "2026-11-02T10:00:00+00:00", extension=said.extensions()))
    assert {stamped(r) for r in results_of(client, declared)} == {(said.clinician, said.program)}
    plain = srs(f"{uid}-2", (90, 90, 90, 90), "2026-11-02T10:00:00+00:00")
    plain.pop("encounter")
    bare = submit(client, plain)
    assert {stamped(r) for r in results_of(client, bare)} == {(None, None)}


def test_a_declared_attribution_that_cannot_be_counted_is_refused(client, uid):
    wrong_type = [{"url": PROGRAM, "valueReference": {"reference": f"Practitioner/{uid}"}}]
    twice = Attribution(f"Practitioner/{uid}").extensions() * 2
    for extension, said in ((wrong_type, "session-program must be a valueReference to Organization"),
                            (twice, "session-clinician is given 2 times")):  # fmt: skip
        refused = post(
            client, "/QuestionnaireResponse", srs(uid, LOW, "2026-11-02T10:00:00+00:00", extension=extension)
        )
        outcome = assert_outcome(refused, 422, "value")
        assert any(said in issue["diagnostics"] for issue in outcome["issue"]), outcome
    assert client.get("/QuestionnaireResponse", params={"subject": f"Patient/{uid}"}).json().get("total") == 0

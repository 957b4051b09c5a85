"""FHIR Bulk Data Access 2.0 ``$export`` (issue: integrators at scale), on both databases: a seeded population
exported at system, Patient and Group level, each resource checked against the database (the line is the stored
JSON itself, byte for byte, or its ``_elements`` subset); every kick-off parameter; a patient token sees only its
patient; files and status only for the token's own client; a Backend Services client end to end over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import fhirjson
from fhir_server.export.request import exportable_types
from fhir_server.search.compartments import compartment_types
from tests.api.fhir import assert_outcome
from tests.auth.smart_support import assertion, backend_key, backend_token, public_jwks, register_client
from tests.export.support import (
    SURVEY,
    Population,
    admin,
    export,
    export_server,
    ids,
    kick_off,
    read_output,
    seed,
    status_url,
    wait_for_manifest,
)
from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@pytest.fixture(scope="module")
def world(backend: str) -> Iterator[tuple[RunningServer, Population]]:
    with export_server(backend) as server:
        yield server, seed(server, "w")


def stored(server: RunningServer, resource_type: str) -> dict[str, bytes]:
    """The database's current resources of a type: id → the stored JSON."""
    return {s.id: (s.content or "").encode() for s in server.app.state.fhir.repo.all_current(resource_type)}


def refs(resource: Any) -> set[str]:
    """Every reference string in a resource."""
    found: set[str] = set()
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                found.add(value)
            else:
                found |= refs(value)
    elif isinstance(resource, list):
        for value in resource:
            found |= refs(value)
    return found


def test_a_system_export_is_the_database(world):
    server, _ = world
    with admin(server) as c:
        manifest, output = export(c, "/$export")
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export") and manifest["transactionTime"]
    for item in manifest["output"]:  # one file per type, a count, the status URL's own folder
        assert item["url"].startswith(f"{server.fhir_base}/_export/") and item["count"] > 0
    assert len({item["type"] for item in manifest["output"]}) == len(manifest["output"])
    exported_types = {t for t in output}
    assert {"Patient", "Observation", "Flag", "Provenance", "QuestionnaireResponse", "Group", "Questionnaire"} <= (
        exported_types
    )
    assert "AuditEvent" not in exported_types  # only when asked for by name
    for resource_type in exportable_types("system"):  # every type, those with nothing in it too
        lines = output.get(resource_type, [])
        assert len(set(ids(lines))) == len(lines), f"{resource_type}: a resource twice"
        if resource_type != "AuditEvent":  # byte for byte what the database holds
            assert sorted(lines) == sorted(stored(server, resource_type).values()), resource_type
    for resource_type in ("Patient", "Observation", "Practitioner", "Organization", "Basic", "Provenance"):
        assert resource_type in output, f"{resource_type} is in the database but not in the export"


def test_every_parameter_at_patient_level(world):
    """_outputFormat, _type, _since, _typeFilter, _elements and includeAssociatedData together; the expected
    content is worked out here from the stored resources, not by the server's search."""
    server, population = world
    params = [
        ("_outputFormat", "application/fhir+ndjson"),
        ("_type", "Patient,Observation"),
        ("_type", "Flag,QuestionnaireResponse"),  # repeated: as if comma separated
        ("_since", population.checkpoint),
        ("_typeFilter", f"Observation?category={SURVEY}"),
        ("_elements", "Patient.name,Patient.birthDate"),
        ("includeAssociatedData", "RelevantProvenanceResources"),
    ]
    with admin(server) as c:
        manifest, output = export(c, "/Patient/$export", params)
    assert manifest["request"].startswith(f"{server.fhir_base}/Patient/$export?_outputFormat=")
    since = population.checkpoint
    patients = set(stored(server, "Patient"))

    def changed(resource_type: str) -> dict[str, dict[str, Any]]:
        found = {i: orjson.loads(c) for i, c in stored(server, resource_type).items()}
        return {i: r for i, r in found.items() if r["meta"]["lastUpdated"] > since}

    def in_compartment(resource: dict[str, Any]) -> bool:
        return any(r.startswith("Patient/") and r.split("/")[1] in patients for r in refs(resource))

    expected: dict[str, set[str]] = {
        "Patient": set(changed("Patient")),
        "Observation": {
            i
            for i, r in changed("Observation").items()
            if in_compartment(r) and any(cc["code"] == SURVEY for cat in r["category"] for cc in cat["coding"])
        },
        "Flag": {i for i, r in changed("Flag").items() if in_compartment(r)},
        "QuestionnaireResponse": {i for i, r in changed("QuestionnaireResponse").items() if in_compartment(r)},
    }
    exported = {f"{t}/{i}" for t, found in expected.items() for i in found}
    expected["Provenance"] = {
        i for i, r in changed("Provenance").items() if {t["reference"] for t in r["target"]} & exported
    }
    assert all(expected.values()), expected  # the population gives every part something to find
    assert {t: set(ids(lines)) for t, lines in output.items()} == expected
    for resource_type in ("Observation", "Flag", "QuestionnaireResponse", "Provenance"):
        current = stored(server, resource_type)
        assert all(line == current[orjson.loads(line)["id"]] for line in output[resource_type]), resource_type
    current = {i: orjson.loads(c) for i, c in stored(server, "Patient").items()}
    for line in output["Patient"]:  # _elements: the subset, tagged SUBSETTED, the rest as stored
        resource = orjson.loads(line)
        full = current[resource["id"]]
        meta = {**full["meta"], "tag": [*full["meta"].get("tag", []), SUBSETTED]}
        kept = {k: full[k] for k in ("name", "birthDate") if k in full}
        assert resource == {"resourceType": "Patient", "id": full["id"], "meta": meta, **kept}


def test_a_patient_token_exports_its_patient_only(world):
    server, population = world
    mine, others = population.patients[0], population.patients[1:]
    token = mint(server, "patient/*.rs", patient=mine, client_id="patient-app", sub="patient-user")
    with client_for(server, token) as c:
        _, output = export(c, "/Patient/$export")
        assert output["Patient"] and ids(output["Patient"]) == [mine] and output["Observation"]
        for resource_type in exportable_types("patient"):
            lines = output.get(resource_type, [])
            text = b"\n".join(lines).decode()
            assert all(f"Patient/{other}" not in text for other in others), resource_type
            if resource_type == "AuditEvent":  # left out unless asked for
                continue
            # exactly what a search with the same token finds: the same access policy
            found = c.get(f"/{resource_type}", params={"_count": "1000", "_elements": "id"}).json()
            assert set(ids(lines)) == {e["resource"]["id"] for e in found.get("entry", [])}, resource_type
        assert population.shared not in ids(output.get("Observation", []))  # names the other patient too
        assert population.deleted not in ids(output.get("Observation", []))
        system = wait_for_manifest(c, status_url(kick_off(c, "/$export", {"_type": "Patient,Observation"})))
        assert ids(read_output(c, system)["Patient"]) == [mine]  # at system level as well


def test_a_group_export_is_the_compartments_of_its_active_members(world):
    server, population = world
    members = population.patients[:2]
    with admin(server) as c:
        _, output = export(c, f"/Group/{population.group}/$export")
        expected: dict[str, set[str]] = {"Patient": set(members)}
        for resource_type in compartment_types("Patient"):
            if resource_type == "AuditEvent":
                continue
            for member in members:
                found = c.get(f"/Patient/{member}/{resource_type}", params={"_count": "1000"}).json()
                expected.setdefault(resource_type, set()).update(e["resource"]["id"] for e in found.get("entry", []))
    # Provenance of what the export holds goes with it (Bulk Data 2.0: targets in the compartment)
    held = {f"{t}/{i}" for t, found in expected.items() for i in found}
    provenance = {i: orjson.loads(c) for i, c in stored(server, "Provenance").items()}
    expected["Provenance"] |= {i for i, r in provenance.items() if {t["reference"] for t in r["target"]} & held}
    expected = {t: found for t, found in expected.items() if found}
    assert population.shared in expected["Observation"]  # in both members' compartments: exported once
    assert expected["Provenance"] and population.patients[2] not in expected["Patient"]  # an inactive member
    assert {t: set(ids(lines)) for t, lines in output.items()} == expected
    for resource_type, lines in output.items():
        assert len(lines) == len(set(ids(lines))), resource_type
        current = stored(server, resource_type)
        assert all(line == current[orjson.loads(line)["id"]] for line in lines), resource_type


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"_outputFormat": "text/csv"}, 400, "not-supported"),
        ({"_type": "Frobnicator"}, 400, "not-supported"),
        ({"_type": "Binary"}, 400, "not-supported"),
        ({"_since": "2026-01-01"}, 400, "value"),
        ({"_typeFilter": "Observation?frobnicate=1"}, 400, "not-supported"),
        (
            {"_type": "Observation", "_typeFilter": "Observation?category=survey&_include=Observation:subject"},
            400,
            "invalid",
        ),
        ({"_type": "Observation", "_typeFilter": "Flag?patient=x"}, 400, "invalid"),
        ({"includeAssociatedData": "LatestProvenanceResources"}, 400, "not-supported"),
        ({"_elements": "Observation.1x"}, 400, "value"),
        ({"patient": "Patient/x"}, 400, "not-supported"),
        ({"frobnicate": "1"}, 400, "not-supported"),
    ],
)
def test_what_cannot_be_honoured_is_refused_before_anything_is_queued(world, params, status, code):
    server, _ = world
    with admin(server, "refusals") as c:
        assert_outcome(kick_off(c, "/Patient/$export", params), status, code)


def test_lenient_handling_reports_what_it_left_out_in_the_error_file(world):
    server, _ = world
    with client_for(server, mint(server, "system/Patient.rs system/Observation.rs", client_id="lenient")) as c:
        params = {"_type": "Patient,Flag,Frobnicator", "includeAssociatedData": "_custom"}
        response = kick_off(c, "/$export", params, Prefer="respond-async, handling=lenient")
        manifest = wait_for_manifest(c, status_url(response))
        assert {item["type"] for item in manifest["output"]} == {"Patient"}
        [error] = manifest["error"]
        lines = c.get(error["url"]).content.splitlines()
    outcomes = [orjson.loads(line) for line in lines]
    texts = " ".join(o["issue"][0]["diagnostics"] for o in outcomes)
    assert all(o["resourceType"] == "OperationOutcome" for o in outcomes) and len(outcomes) == 3
    assert "Flag" in texts and "Frobnicator" in texts and "_custom" in texts


def test_scopes_decide_what_is_exported_and_a_patient_export_needs_patient_search(world):
    server, _ = world
    with client_for(server, mint(server, "system/Observation.rs", client_id="observations-only")) as c:
        assert_outcome(kick_off(c, "/$export", {"_type": "Patient"}), 403, "forbidden")
        assert_outcome(kick_off(c, "/Patient/$export"), 403, "forbidden")
        _, output = export(c, "/$export")
    assert set(output) == {"Observation"}


def test_status_files_and_cancel_belong_to_the_client_that_asked(world):
    server, _ = world
    with admin(server, "owner") as c:
        url = status_url(kick_off(c, "/$export", {"_type": "Patient"}))
        manifest = wait_for_manifest(c, url)
        file_url = manifest["output"][0]["url"]
    same_client_other_user = mint(server, "system/*.rs", client_id="owner", sub="someone-else")
    for token in (mint(server, "system/*.rs", client_id="stranger", sub="stranger"), same_client_other_user):
        with client_for(server, token) as other:
            assert_outcome(other.get(url), 404, "not-found")
            assert_outcome(other.get(file_url), 404, "not-found")
            assert_outcome(other.delete(url), 404, "not-found")
    with client_for(server, None) as anonymous:
        assert anonymous.get(url).status_code == 401 and anonymous.get(file_url).status_code == 401
    with client_for(server, mint(server, "system/Observation.rs", client_id="owner", sub="owner")) as narrower:
        assert_outcome(narrower.get(file_url), 403, "forbidden")  # the token must cover the file's type
    with admin(server, "owner") as c:
        assert c.get(file_url).status_code == 200
        assert c.delete(url).status_code == 202
        assert_outcome(c.get(url), 404, "not-found")
        assert_outcome(c.get(file_url), 404, "not-found")
    assert not (Path(server.settings.export_dir) / url.rsplit("/", 1)[1]).exists()  # the files are gone


def test_a_backend_services_client_exports_end_to_end_over_http(world):
    import httpx

    server, population = world
    key = backend_key("RS384")
    client = register_client(server, kind="jwks", jwks=public_jwks(key), scope="system/*.rs")
    answer = backend_token(
        server,
        assertion(server, client.client_id, key, "RS384"),
        "system/Patient.rs system/Group.rs system/Observation.rs",
    )
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=server.fhir_base, headers=headers, timeout=30) as c:
        kicked = c.post(
            f"/Group/{population.group}/$export",
            content=fhirjson.dumps(
                {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient,Observation"}]}
            ),
            headers={"Content-Type": "application/fhir+json", "Prefer": "respond-async"},
        )
        manifest = wait_for_manifest(c, status_url(kicked))
        output = read_output(c, manifest)
    assert manifest["request"] == f"{server.fhir_base}/Group/{population.group}/$export"  # POST: no parameters
    assert set(ids(output["Patient"])) == set(population.patients[:2])
    assert all(any(f"Patient/{p}" in line.decode() for p in population.patients[:2]) for line in output["Observation"])

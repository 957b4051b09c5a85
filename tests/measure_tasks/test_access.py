"""Task is not in R4's Patient compartment, yet a request to complete a measure is the client's record: a patient
token (SMART v1 patient/*.read, v2 patient/Task.rs) reaches only the Tasks whose every patient reference — for
(subject), owner, requester, focus — is its patient, through read, search, _include, _revinclude and history; any
other Task answers exactly like one that does not exist (404).  Such a Task is written by the clinic: a clinician in
a patient's context writes it for that patient only; the client's own token may not (docs/security.md; both
databases, real tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.fhir import post, put
from tests.measure_tasks.conftest import LINKS
from tests.measure_tasks.tasks_data import canonical, sdc_task
from tests.support.access_data import admin
from tests.support.server import RunningServer
from tests.support.tokens import auth_server, client_for, mint

SCOPES = {"v1": "launch/patient patient/*.read", "v2": "launch/patient patient/Task.rs patient/Patient.rs"}


@dataclass
class World:
    a: str
    b: str
    mine: str  # for and owner A
    theirs: str  # for and owner B
    shared: str  # a plain Task for A, owned by B: neither's alone
    from_b: str  # for A, requested by patient B
    plain: str  # a plain R4 Task whose focus is patient B


@pytest.fixture(scope="module")
def guarded(database_url: str, backend: str) -> Iterator[RunningServer]:
    with auth_server(database_url, backend, **LINKS) as running:
        yield running


@pytest.fixture(scope="module")
def world(guarded: RunningServer, uid_module: str) -> World:
    a, b = f"task-a-{uid_module}", f"task-b-{uid_module}"
    ors = canonical(guarded, "ors")
    with admin(guarded) as c:
        for patient in (a, b):
            assert put(c, f"/Patient/{patient}", {"resourceType": "Patient", "id": patient}).is_success

        def create(task: dict) -> str:
            created = post(c, "/Task", task)
            assert created.status_code == 201, created.text
            return created.json()["id"]

        plain = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "focus": {"reference": f"Patient/{b}"},
        }
        return World(
            a,
            b,
            mine=create(sdc_task(a, ors)),
            theirs=create(sdc_task(b, ors)),
            shared=create(
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": f"Patient/{a}"},
                    "owner": {"reference": f"Patient/{b}"},
                }
            ),
            from_b=create({**sdc_task(a, ors), "requester": {"reference": f"Patient/{b}"}}),
            plain=create(plain),
        )


@pytest.fixture(scope="module")
def uid_module() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


def _for(task: dict) -> str:
    return task.get("for", {}).get("reference", "")


def _ids(bundle: dict, resource_type: str = "Task") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == resource_type}


@pytest.mark.parametrize("version", sorted(SCOPES))
def test_a_patient_token_reads_and_searches_only_its_own_tasks(guarded, world, version):
    token = mint(guarded, SCOPES[version], patient=world.a)
    with client_for(guarded, token) as c:
        assert c.get(f"/Task/{world.mine}").status_code == 200
        for other in (world.theirs, world.shared, world.from_b, world.plain):
            missing = c.get(f"/Task/{other}")
            assert missing.status_code == 404, (other, missing.text)
            assert c.get(f"/Task/{other}/_history").status_code == 404
            assert c.get(f"/Task/{other}/_history/1").status_code == 404
        assert c.get("/Task/no-such-task").status_code == 404
        others = {world.theirs, world.shared, world.from_b, world.plain}
        for found in (
            c.get("/Task").json(),
            c.get("/Task", params={"patient": world.a, "status": "requested,received,accepted,in-progress"}).json(),
            c.get("/Task/_history").json(),
        ):
            ids = _ids(found)
            assert world.mine in ids and not ids & others, ids
            assert all(_for(e["resource"]) == f"Patient/{world.a}" for e in found["entry"] if "resource" in e)
        assert _ids(c.get("/Task", params={"patient": world.b}).json()) == set()
        assert _ids(c.get("/Task", params={"focus": f"Patient/{world.b}"}).json()) == set()
        assert len(c.get(f"/Task/{world.mine}/_history").json()["entry"]) == 1


def test_includes_and_revincludes_stop_at_the_patient(guarded, world):
    token = mint(guarded, SCOPES["v2"], patient=world.a)
    with client_for(guarded, token) as c:
        included = c.get("/Task", params={"_include": "Task:owner", "_id": f"{world.mine},{world.shared}"}).json()
        assert _ids(included) == {world.mine}
        assert _ids(included, "Patient") == {world.a}
        for parameter in ("Task:patient", "Task:subject", "Task:owner", "Task:requester", "Task:focus"):
            found = c.get("/Patient", params={"_id": f"{world.a},{world.b}", "_revinclude": parameter}).json()
            assert _ids(found, "Patient") == {world.a}
            assert _ids(found) <= {world.mine}, parameter
        chained = c.get("/Patient", params={"_has:Task:patient:status": "requested"}).json()
        assert _ids(chained, "Patient") <= {world.a}


def test_the_client_may_not_write_a_request_and_a_clinician_writes_one_for_the_launch_patient(guarded, world):
    ors = canonical(guarded, "ors")
    client_scopes = "launch/patient patient/Task.cruds"
    with client_for(guarded, mint(guarded, client_scopes, patient=world.a, fhirUser=f"Patient/{world.a}")) as c:
        refused = post(c, "/Task", sdc_task(world.a, ors))
        assert refused.status_code == 403, refused.text
        own = c.get(f"/Task/{world.mine}").json()
        assert put(c, f"/Task/{world.mine}", {**own, "status": "cancelled"}).status_code == 403
    clinician = mint(guarded, client_scopes + " openid fhirUser", patient=world.a, fhirUser="Practitioner/t-1")
    with client_for(guarded, clinician) as c:
        assert post(c, "/Task", sdc_task(world.a, ors)).status_code == 201
        assert post(c, "/Task", sdc_task(world.b, ors)).status_code == 403
        moved = c.get(f"/Task/{world.mine}").json()
        moved.update({"for": {"reference": f"Patient/{world.b}"}, "owner": {"reference": f"Patient/{world.b}"}})
        assert put(c, f"/Task/{world.mine}", moved).status_code == 403
        their = put(c, f"/Task/{world.theirs}", {**sdc_task(world.a, ors), "id": world.theirs})
        assert their.status_code in (403, 404), their.text  # another patient's Task is not reachable to move
    with admin(guarded) as c:
        assert c.get(f"/Task/{world.theirs}").json()["for"]["reference"] == f"Patient/{world.b}"

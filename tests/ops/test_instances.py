"""Several independent server instances on one PostgreSQL database (issue 24, point 1 and its acceptance).

Two ``fhir-server serve`` processes, started at the same moment on a new database, each with every background
worker on: the library is stored once; 200 scored submissions spread over both while the EHR is down reach it,
once it is back, exactly once each, delivered by both instances and never by both; N reads spread over both leave
N AuditEvents, through a clean shutdown of one of them; a SearchParameter created through one is used by the other
within the stated bound; a signing key rotated by an administrator is honoured by both.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI
from joserfc.jwk import RSAKey
from sqlalchemy import create_engine, text

from fhir_server.app import create_app
from fhir_server.auth.keys import SIGNING_CHECK_INTERVAL
from fhir_server.config import Settings
from fhir_server.ehr import outbox, registry
from fhir_server.search.custom import REFRESH_SECONDS
from tests.ehr.harness import EhrProcess, FaultProxy, temp_folder
from tests.ehr.world import local_results, srs_ehr
from tests.ops.instances import (
    INSTANCE_SETTINGS,
    SRS,
    backend_token,
    count_in,
    ehr_patients,
    fhir_client,
    kid_of,
    submit_form,
    wait_until,
)
from tests.subscriptions.receiver import Receiver, event_numbers
from tests.subscriptions.support import RESPONSES, subscription, wait_status
from tests.subscriptions.test_subscriptions import HIGH
from tests.subscriptions.test_subscriptions import submit as submit_srs
from tests.support.databases import POSTGRES_ENV, postgres_admin_url, postgres_database
from tests.support.process import ServerProcess, cli

SUBMISSIONS = 200
READS = 300
EVENTS = 20
BACKEND_SCOPE = " ".join(f"system/{t}.crus" for t in registry.DEFAULT_RESOURCE_TYPES)
SEARCH_PARAMETER_BOUND = REFRESH_SECONDS  # seconds: docs/architecture.md


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL half skipped: {POSTGRES_ENV} is not set (instances share one PostgreSQL database)")
    with postgres_database(admin) as url:
        done = cli(url, "db", "upgrade")
        assert done.returncode == 0, done.stderr
        yield url


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with temp_folder() as name:
        yield Path(name)


@pytest.fixture(scope="module")
def ehr(folder: Path) -> Iterator[EhrProcess]:
    with srs_ehr(folder) as process:
        yield process


@pytest.fixture(scope="module")
def proxy(ehr: EhrProcess, folder: Path) -> Iterator[FaultProxy]:
    running = FaultProxy(ehr.root, folder)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def instances(database: str, folder: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Both started at the same moment, on a database no server has started on yet (the library not stored)."""
    a = ServerProcess(database, folder, "instance-a", INSTANCE_SETTINGS)
    b = ServerProcess(database, folder, "instance-b", INSTANCE_SETTINGS)
    starters = [threading.Thread(target=s.start) for s in (a, b)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    try:
        assert a.process is not None and b.process is not None, "an instance did not start"
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def local(database: str, instances: tuple[ServerProcess, ServerProcess]) -> Iterator[FastAPI]:
    """The tests' own view of the shared database (no worker): app sessions as a launch leaves them, outbox rows."""
    app = create_app(Settings(database_url=database, auth_required=False, outbox_worker=False, _env_file=None))
    yield app
    app.state.read_engine.dispose()
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def admin_token(database: str, instances: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[str, RSAKey]]:
    """A Backend Services client of ours (registered by the administrator), and its private key."""
    key = RSAKey.generate_key(
        2048, parameters={"kid": uuid.uuid4().hex[:12], "alg": "RS384", "use": "sig"}, private=True
    )
    jwks = instances[0].log.parent / "admin-jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    added = cli(
        database, "clients", "add", "--name", "ops", "--client-id", "ops-client", "--scope", "system/*.cruds",
        "--jwks-file", str(jwks),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    yield "ops-client", key


def _stored_events(database: str, patient: str) -> int:
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT content FROM resources WHERE resource_type = 'AuditEvent' AND NOT deleted")
            ).all()
    finally:
        engine.dispose()
    reference = f"Patient/{patient}"
    return sum(
        1
        for (content,) in rows
        if (event := orjson.loads(content)).get("action") == "R"
        and any(e.get("what", {}).get("reference") == reference for e in event.get("entity", []))
    )


def _delivered_rows(instance: ServerProcess) -> set[int]:
    rows = set()
    for line in instance.log.read_text().splitlines():
        if '"outbox row delivered"' in line:
            rows.add(orjson.loads(line[line.index("{") :])["outbox_row"])
    return rows


def test_instances_started_together_store_the_library_once(instances, admin_token):
    a, b = instances
    for instance in (a, b):
        token = backend_token(instance, *admin_token, "system/Questionnaire.rs")
        with fhir_client(instance, token) as client:
            found = client.get("/Questionnaire", params={"url": SRS.split("|")[0], "_count": "100"})
        assert found.status_code == 200, found.text
        versions = [e["resource"]["version"] for e in found.json()["entry"]]
        assert versions and len(versions) == len(set(versions)), versions
        assert SRS.split("|")[1] in versions


def test_200_submissions_over_both_instances_reach_the_recovered_ehr_exactly_once(
    instances, local, ehr, proxy, database
):
    a, b = instances
    registration = registry.register(
        local.state.engine, issuer=proxy.fhir_base, client_id="fit-app", backend_client_id="fit-outbox-two",
        name="EHR of the two-instance test",
    )  # fmt: skip
    ehr.register_backend_client("fit-outbox-two", f"{a.root}/auth/jwks", BACKEND_SCOPE)
    pairs = ehr_patients(ehr, SUBMISSIONS)
    sessions = [
        local.state.app_sessions.create_session(
            ehr_id=registration.id,
            launch_iss=registration.issuer,
            patient=patient,
            encounter=encounter,
            questionnaire=SRS,
        )
        for patient, encounter in pairs
    ]
    proxy.down(3600)  # the EHR is unreachable until proxy.up()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: submit_form((a, b)[i % 2], sessions[i][0], sessions[i][1].csrf_token), range(SUBMISSIONS)
            )
        )
    rows = [r for r in outbox.rows(local.state.engine) if r.ehr_id == registration.id]
    assert len(rows) == SUBMISSIONS
    wait_until(lambda: sum(r.attempts > 0 for r in outbox.rows(local.state.engine, "pending")) >= 20, "tried")
    assert count_in(ehr, "QuestionnaireResponse") == 0
    proxy.up()

    def all_delivered() -> bool:
        states = outbox.delivery_states(local.state.engine, [r.response_id for r in rows])
        assert "failed" not in states.values(), states
        return all(state == "in the EHR" for state in states.values())

    wait_until(all_delivered, "all in the EHR", timeout=300, step=1)
    # Exactly once: the EHR holds as many of each type as were scored here (it had none before).
    expected: dict[str, int] = {"QuestionnaireResponse": SUBMISSIONS}
    for row in rows:
        for resource in local_results(local, row.response_id):
            expected[resource["resourceType"]] = expected.get(resource["resourceType"], 0) + 1
    assert {t: count_in(ehr, t) for t in expected} == expected
    # Both instances delivered, and no row was delivered by both.
    by_a, by_b = _delivered_rows(a), _delivered_rows(b)
    assert by_a and by_b, (len(by_a), len(by_b))
    assert not by_a & by_b
    assert by_a | by_b == {r.id for r in rows}


def test_a_search_parameter_created_through_one_instance_is_used_by_the_other_within_the_bound(instances, admin_token):
    a, b = instances
    code = f"pet{uuid.uuid4().hex[:6]}"
    parameter = {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/SearchParameter/{code}",
        "name": code,
        "status": "active",
        "description": "the patient's pet, in an extension (a site's own search parameter)",
        "code": code,
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.extension.where(url='http://example.org/pet').value",
    }
    pet = f"Rex{uuid.uuid4().hex[:6]}"
    patient = {
        "resourceType": "Patient",
        "extension": [{"url": "http://example.org/pet", "valueString": pet}],
    }
    with (
        fhir_client(a, backend_token(a, *admin_token, "system/*.cruds")) as on_a,
        fhir_client(b, backend_token(b, *admin_token, "system/*.cruds")) as on_b,
    ):
        strict = {"Prefer": "handling=strict"}  # an unknown parameter is an error, not ignored
        assert on_a.get("/Patient", params={code: pet}, headers=strict).status_code == 400  # unknown before
        assert on_b.get("/Patient", params={code: pet}, headers=strict).status_code == 400
        created = on_a.post("/SearchParameter", json=parameter)
        assert created.status_code == 201, created.text
        started = time.monotonic()
        assert on_a.post("/Patient", json=patient).status_code == 201  # indexed by a, which knows it at once

        def b_finds_it() -> bool:
            found = on_b.get("/Patient", params={code: pet}, headers=strict)
            return found.status_code == 200 and found.json().get("total") == 1

        wait_until(b_finds_it, "found through b", timeout=30, step=0.1)
        assert time.monotonic() - started <= SEARCH_PARAMETER_BOUND + 2  # the bound, and a request's slack
        # b indexes it on its writes too, and a finds what b wrote
        assert on_b.post("/Patient", json=patient).status_code == 201
        both = on_a.get("/Patient", params={code: pet}, headers=strict)
        assert both.status_code == 200 and both.json()["total"] == 2, both.text


def test_a_subscription_is_notified_once_per_event_whichever_instance_wrote_or_sends(instances, admin_token):
    """Both instances run the notification worker; events written through either are each sent once, in order."""
    a, b = instances
    receiver = Receiver()
    receiver.up()
    try:
        clients = {i: fhir_client(i, backend_token(i, *admin_token, "system/*.cruds")) for i in (a, b)}
        created = clients[a].post("/Subscription", json=subscription(RESPONSES, receiver.url, content="id-only"))
        assert created.status_code == 201, created.text
        wait_status(clients[b], created.json()["id"], "active")
        patient = clients[a].post("/Patient", json={"resourceType": "Patient", "birthDate": "1990-04-02"}).json()["id"]
        written = [submit_srs(clients[(a, b)[i % 2]], patient, HIGH) for i in range(EVENTS)]
        receiver.wait_for(lambda: len(event_numbers(receiver.bundles("event-notification"))) >= EVENTS, timeout=60)
        time.sleep(1)  # a second sending of any event would arrive now
        notified = receiver.bundles("event-notification")
        assert event_numbers(notified) == list(range(1, EVENTS + 1))  # each once, in order
        assert [e["fullUrl"].rsplit("/", 1)[1] for n in notified for e in n["entry"][1:]] == written
    finally:
        receiver.down()
        for client in clients.values():
            client.close()


def test_a_signing_key_rotated_by_the_administrator_is_honoured_by_both_instances(database, instances, admin_token):
    a, b = instances
    before = backend_token(b, *admin_token, "system/Patient.rs")  # b has loaded its signing key
    rotated = cli(database, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split("new signing key ", 1)[1].split(";")[0].strip()
    assert kid_of(before) != new_kid
    time.sleep(SIGNING_CHECK_INTERVAL + 0.2)  # the stated bound (auth/keys.py)
    for issuer in (b, a):
        token = backend_token(issuer, *admin_token, "system/Patient.rs")
        assert kid_of(token) == new_kid  # signed with the new key, not the retired one
        for reader in (a, b):  # and accepted by both
            with fhir_client(reader, token) as client:
                assert client.get("/Patient", params={"_count": "1"}).status_code == 200
    with fhir_client(a, before) as client:  # tokens of the retired key still verify within its grace period
        assert client.get("/Patient", params={"_count": "1"}).status_code == 200


def test_reads_over_both_instances_each_leave_an_audit_event_through_a_clean_shutdown(database, instances, admin_token):
    a, b = instances
    tokens = {i: backend_token(i, *admin_token, "system/Patient.cruds") for i in (a, b)}
    patient = f"audited-{uuid.uuid4().hex[:8]}"
    with fhir_client(a, tokens[a]) as client:
        assert client.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201

    def read(i: int) -> int:
        instance = (a, b)[i % 2]
        with fhir_client(instance, tokens[instance]) as client:
            return client.get(f"/Patient/{patient}").status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read, range(READS))) == {200}
    b.stop()  # SIGTERM right after the reads: b's queued audit records are stored on the way out
    try:
        wait_until(lambda: _stored_events(database, patient) >= READS, f"{READS} read AuditEvents", timeout=30)
        assert _stored_events(database, patient) == READS
    finally:
        b.start()

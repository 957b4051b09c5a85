"""Write-back durability and administration (issue 7): a server killed with deliveries pending delivers them after
its restart, once ("a server restart in the middle loses nothing"); a delivery that keeps failing is parked as
dead, listed by ``fhir-server outbox list --dead`` and sent again by ``fhir-server outbox retry``; EHR
registrations are managed with ``fhir-server ehr add|list|remove`` and bad input gets a clear error.
"""

from __future__ import annotations

import re

from fhir_server.ehr import outbox, registry
from tests.ehr.harness import cli
from tests.ehr.world import HIGH, LOW, in_ehr_once, new_patient, rows_for, srs, submit, wait_for, wait_for_attempts

WRITES = {"method": "POST", "path": "/fhir"}


def _delivered_transactions(proxy) -> int:
    return sum(r["method"] == "POST" and r["path"] == "/fhir" and r.get("status") == 200 for r in proxy.requests())


def test_pending_deliveries_survive_a_killed_server_and_arrive_once_after_restart(
    ours, ehr, local, proxy, registration, uid
):
    proxy.plan({"action": "status", "status": 503, "count": 10_000, **WRITES})  # the EHR keeps failing for now
    patient, encounter = new_patient(ehr, uid)
    launches = [f"{uid}-1", f"{uid}-2"]
    authored = ["2026-11-02T10:00:00+00:00", "2026-11-09T10:00:00+00:00"]
    responses = [
        submit(local, registration.id, srs(patient, encounter, marks, when, launch))
        for marks, when, launch in zip((LOW, HIGH), authored, launches, strict=True)
    ]
    for response_id in responses:
        wait_for_attempts(local, response_id, 1)
    ours.kill()  # SIGKILL: no shutdown, as in a crash
    try:
        assert [outbox.delivery_state(local.state.engine, r) for r in responses] == ["pending", "pending"]
        proxy.plan()  # the EHR is healthy again while we are down
    finally:
        ours.start()
    for response_id in responses:
        wait_for(local, response_id, "in the EHR")
        in_ehr_once(ehr, local, response_id)
        [row] = rows_for(local, response_id)
        assert row.status == "delivered" and row.delivered_at is not None
    assert _delivered_transactions(proxy) == 2  # one successful transaction per row, nothing sent twice


def test_a_delivery_that_keeps_failing_is_dead_until_an_administrator_retries_it(
    ours, ehr, local, proxy, registration, uid, database_url
):
    ours.stop()
    ours.start(FHIR_SERVER_OUTBOX_MAX_ATTEMPTS="3")
    try:
        proxy.plan({"action": "status", "status": 503, "count": 10_000, **WRITES})
        patient, encounter = new_patient(ehr, uid)
        response_id = submit(local, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", uid))
        wait_for(local, response_id, "failed")  # what the clinician screen shows
        [row] = rows_for(local, response_id)
        assert (row.status, row.attempts) == ("dead", 3)
        assert row.last_error == "the EHR refused the transaction: HTTP 503 (transient)"  # no PHI, no token
        assert [r["status"] for r in proxy.requests() if r["path"] == "/fhir"] == [503, 503, 503]

        listed = cli(database_url, "outbox", "list", "--dead")
        assert listed.returncode == 0, listed.stderr
        line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{row.id} "))
        assert f"QuestionnaireResponse/{response_id}" in line and "dead" in line and "HTTP 503" in line

        proxy.plan()
        not_dead = cli(database_url, "outbox", "retry", "999999999")
        assert not_dead.returncode == 1 and "no outbox row 999999999" in not_dead.stderr
        retried = cli(database_url, "outbox", "retry", str(row.id))
        assert retried.returncode == 0 and "queued again" in retried.stdout, retried.stderr
        wait_for(local, response_id, "in the EHR")
        in_ehr_once(ehr, local, response_id)
        again = cli(database_url, "outbox", "retry", str(row.id))
        assert again.returncode == 1 and "delivered, not dead" in again.stderr
    finally:
        ours.stop()
        ours.start()


def test_a_refusal_that_will_not_change_is_dead_at_once_and_retry_all_dead_sends_it(
    ours, ehr, local, proxy, registration, uid, database_url
):
    proxy.plan({"action": "status", "status": 422, **WRITES})  # the EHR refuses the content, once
    patient, encounter = new_patient(ehr, uid)
    response_id = submit(local, registration.id, srs(patient, encounter, LOW, "2026-11-02T10:00:00+00:00", uid))
    wait_for(local, response_id, "failed")
    [row] = rows_for(local, response_id)
    assert row.attempts == 1 and row.last_error == "the EHR refused the transaction: HTTP 422 (invalid)"
    retried = cli(database_url, "outbox", "retry", "--all-dead")
    assert retried.returncode == 0 and re.search(r"\d+ dead deliveries queued again", retried.stdout)
    wait_for(local, response_id, "in the EHR")
    in_ehr_once(ehr, local, response_id)


def test_ehr_registrations_from_the_command_line(ours, local, database_url, uid):
    issuer = f"http://127.0.0.1:9/{uid}/fhir"  # nothing listens there: a delivery attempt is refused at once
    args = ["--client-id", "fit-app", "--auth", "client_secret_basic", "--secret-env", "FIT_EHR_SECRET"]
    args += ["--scope", "launch", "openid", "patient/Observation.cru", "--backend-client-id", "fit-backend"]
    secret = {"FIT_EHR_SECRET": "s3cret-value-never-shown"}
    added = cli(
        database_url, "ehr", "add", "--issuer", issuer + "/", *args, "--rate", "5", "--name", "Clinic EHR", env=secret
    )
    assert added.returncode == 0, added.stderr
    ehr_id = int(re.search(r"registered EHR (\d+)", added.stdout).group(1))
    found = registry.by_issuer(local.state.engine, issuer)  # what a launch's iss is checked against
    assert found is not None and found.id == ehr_id and found.scope == "launch openid patient/Observation.cru"
    assert found.resource_types == registry.DEFAULT_RESOURCE_TYPES and found.max_requests_per_second == 5
    listed = cli(database_url, "ehr", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{ehr_id} "))
    assert "Clinic EHR" in line and issuer in line and "(secret set)" in line and "5/s" in line
    assert "s3cret" not in listed.stdout + listed.stderr

    refused = {
        "already registered": ["--issuer", issuer, "--client-id", "x"],
        "http or https": ["--issuer", "ftp://ehr.example.org", "--client-id", "x"],
        "needs a client secret": ["--issuer", "https://a.example", "--client-id", "x", "--auth", "client_secret_basic"],
        "only used with client_secret_basic": ["--issuer", "https://b.example", "--client-id", "x",
                                               "--secret-env", "FIT_EHR_SECRET"],
        "--secret is not accepted": ["--issuer", "https://e.example", "--client-id", "x",
                                     "--auth", "client_secret_basic", "--secret", "s"],
        "resource types: Gadget": ["--issuer", "https://c.example", "--client-id", "x", "--types", "Gadget"],
        "positive number": ["--issuer", "https://d.example", "--client-id", "x", "--rate", "0"],
    }  # fmt: skip
    for message, bad in refused.items():
        answer = cli(database_url, "ehr", "add", *bad, env=secret)
        assert answer.returncode == 1 and message in answer.stderr, (message, answer.stderr)

    # Removing an EHR with a delivery pending needs --force; the orphaned row is then parked as dead.
    response_id = submit(local, ehr_id, srs("p", "e", HIGH, "2026-11-02T10:00:00+00:00", uid))
    kept = cli(database_url, "ehr", "remove", str(ehr_id))
    assert kept.returncode == 1 and "pending" in kept.stderr and "--force" in kept.stderr
    removed = cli(database_url, "ehr", "remove", str(ehr_id), "--force")
    assert removed.returncode == 0, removed.stderr
    assert registry.get(local.state.engine, ehr_id) is None
    wait_for(local, response_id, "failed")
    assert rows_for(local, response_id)[0].last_error == "the EHR registration was removed"
    gone = cli(database_url, "ehr", "remove", str(ehr_id))
    assert gone.returncode == 1 and f"no EHR {ehr_id}" in gone.stderr

"""An export's life on a server that runs it slowly (one resource per page, a pause between pages), on both
databases: what was written after its transaction time, cancelling a running job, one job at a time per client
and the server's cap, expiry, and ``fhir-server export list|cancel``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.api.fhir import assert_outcome
from tests.export.support import admin, export_server, ids, kick_off, read_output, status_url, wait_for_manifest
from tests.support.process import cli
from tests.support.server import RunningServer

PATIENTS = 40  # 6 s to export at one a page: time enough to look at a running job


@pytest.fixture(scope="module")
def server(backend: str) -> Iterator[RunningServer]:
    slow = {
        "export_page_size": 1,
        "export_page_pause_seconds": 0.15,
        "export_max_active_jobs": 2,
        "export_file_lifetime_seconds": 4,
    }
    with export_server(backend, **slow) as running:
        with admin(running) as c:
            for n in range(PATIENTS):
                assert (
                    c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"P{n}"}]}).status_code
                    == 201
                )
        yield running


def wait_until_running(c, url: str) -> str:
    """The job's X-Progress once it is writing its first type."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = c.get(url)
        assert response.status_code == 202, response.text
        if "writing" in response.headers["X-Progress"]:
            return response.headers["X-Progress"]
        time.sleep(0.02)
    raise AssertionError("the job did not start")


def job_folder(server: RunningServer, url: str) -> Path:
    return Path(server.settings.export_dir) / url.rsplit("/", 1)[1]


def wait_until(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} did not come true"
        time.sleep(0.05)


def wait_until_gone(path: Path, timeout: float = 15) -> None:
    wait_until(lambda: not path.exists(), timeout)


def test_what_is_written_during_the_export_goes_out_as_it_was_at_the_transaction_time(server):
    with admin(server, "as-at") as c:
        old = c.post("/Organization", json={"resourceType": "Organization", "name": "Before"}).json()
        url = status_url(kick_off(c, "/$export", {"_type": "Patient,Organization"}))
        assert "Patient" in wait_until_running(c, url)  # Organization not read yet
        changed = c.put(f"/Organization/{old['id']}", json={**old, "name": "After"}).json()
        new = c.post("/Organization", json={"resourceType": "Organization", "name": "New"}).json()
        manifest = wait_for_manifest(c, url)
        output = read_output(c, manifest)
    assert manifest["transactionTime"] < changed["meta"]["lastUpdated"]
    [line] = [line for line in output["Organization"] if orjson.loads(line)["id"] == old["id"]]
    assert orjson.loads(line) == old  # version 1, byte for byte as it was stored then
    assert new["id"] not in ids(output["Organization"])
    assert len(output["Patient"]) == PATIENTS


def test_cancelling_a_running_export_stops_it_and_removes_its_files(server):
    with admin(server, "canceller") as c:
        url = status_url(kick_off(c, "/$export", {"_type": "Patient"}))
        wait_until_running(c, url)
        wait_until(job_folder(server, url).exists)  # a partial file is being written
        cancelled = c.delete(url)
        assert cancelled.status_code == 202 and cancelled.json()["resourceType"] == "OperationOutcome"
        assert_outcome(c.get(url), 404, "not-found")
        assert_outcome(c.delete(url), 404, "not-found")
        wait_until_gone(job_folder(server, url))
        time.sleep(0.5)  # the worker has stopped: nothing comes back
        assert not job_folder(server, url).exists()


def test_one_export_at_a_time_per_client_and_a_cap_on_the_server(server):
    with admin(server, "first") as first, admin(server, "second") as second, admin(server, "third") as third:
        running = status_url(kick_off(first, "/$export", {"_type": "Patient"}))
        again = kick_off(first, "/$export", {"_type": "Patient"})
        assert_outcome(again, 429, "throttled")
        assert again.headers["Retry-After"] == "1"
        other = status_url(kick_off(second, "/$export", {"_type": "Patient"}))  # another client is not held up
        full = kick_off(third, "/$export", {"_type": "Patient"})  # the server's cap is 2
        assert_outcome(full, 429, "throttled")
        assert "maximum" in full.json()["issue"][0]["diagnostics"]
        for c, url in ((first, running), (second, other)):
            assert c.delete(url).status_code == 202
        later = [
            (third, status_url(kick_off(third, "/$export", {"_type": "Patient"}))),  # room again
            (first, status_url(kick_off(first, "/Patient/$export", {"_type": "Patient"}))),
        ]
        for c, url in later:
            assert c.delete(url).status_code == 202


def test_files_expire_and_the_server_removes_them(server):
    with admin(server, "expiring") as c:
        assert c.post("/Organization", json={"resourceType": "Organization", "name": "Soon gone"}).status_code == 201
        url = status_url(kick_off(c, "/$export", {"_type": "Organization"}))
        manifest = wait_for_manifest(c, url)
        file_url = manifest["output"][0]["url"]
        assert c.get(file_url).status_code == 200 and job_folder(server, url).exists()
        wait_until_gone(job_folder(server, url))  # 4 s after it completed
        assert_outcome(c.get(url), 404, "not-found")
        assert_outcome(c.get(file_url), 404, "not-found")


def test_the_administrator_lists_and_cancels_exports(server):
    env = {"FHIR_SERVER_EXPORT_DIR": server.settings.export_dir}
    with admin(server, "listed") as c:
        url = status_url(kick_off(c, "/$export", {"_type": "Patient"}))
        job_id = url.rsplit("/", 1)[1]
        wait_until_running(c, url)
        listed = cli(server.settings.database_url, "export", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        line = next(x for x in listed.stdout.splitlines() if x.startswith(job_id))
        assert re.search(
            r"running .* listed .* system .*\[[#.]+\] \d+ of 1 types, \d+ resources, writing Patient", line
        )
        cancelled = cli(server.settings.database_url, "export", "cancel", job_id, env=env)
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
        assert_outcome(c.get(url), 404, "not-found")
        wait_until_gone(job_folder(server, url))
        unknown = cli(server.settings.database_url, "export", "cancel", job_id, env=env)
        assert unknown.returncode == 1 and "no export job" in unknown.stderr

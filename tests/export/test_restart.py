"""A server killed (SIGKILL) in the middle of an export, on both databases: after its restart the job resumes from
its last finished type, and the output is complete, with no resource twice."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import orjson

from tests.export.support import status_url, wait_for_manifest
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.process import server_process

PER_TYPE = 10
TYPES = ("Patient", "Practitioner", "Organization")


def test_a_job_resumes_after_a_restart_from_its_last_finished_type(backend, uid):
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url, tempfile.TemporaryDirectory(prefix="fhir-exports-") as folder:
        env = {
            "FHIR_SERVER_AUTH_REQUIRED": "false",
            "FHIR_SERVER_EXPORT_DIR": folder,
            "FHIR_SERVER_EXPORT_PAGE_SIZE": "1",
            "FHIR_SERVER_EXPORT_PAGE_PAUSE_SECONDS": "0.1",  # a second per type
            "FHIR_SERVER_EXPORT_LEASE_SECONDS": "1",  # the restarted server takes the job over soon
            "FHIR_SERVER_EXPORT_POLL_SECONDS": "0.1",
            "FHIR_SERVER_EXPORT_RETRY_AFTER_SECONDS": "1",
        }
        with server_process(url, **env) as server:
            with httpx.Client(base_url=server.fhir_base, timeout=30) as c:
                expected = {t: set() for t in TYPES}
                for n in range(PER_TYPE):
                    for resource_type, body in (
                        ("Patient", {"name": [{"family": f"R{n}"}]}),
                        ("Practitioner", {"name": [{"family": f"D{n}"}]}),
                        ("Organization", {"name": f"O{uid}{n}"}),
                    ):
                        created = c.post(f"/{resource_type}", json={"resourceType": resource_type, **body})
                        assert created.status_code == 201, created.text
                        expected[resource_type].add(created.json()["id"])
                kicked = c.get("/$export", params={"_type": ",".join(TYPES)}, headers={"Prefer": "respond-async"})
                location = status_url(kicked)
                progress = _progress_when(c, location, lambda text: text.startswith("1 of 3 types"))
                server.kill()  # as in a crash: no shutdown, the lease is left to run out
            assert progress.startswith("1 of 3 types")
            finished = Path(folder) / location.rsplit("/", 1)[1] / "Patient.ndjson"
            before = finished.stat()  # the finished type's file, written before the kill
            server.start()
            with httpx.Client(base_url=server.fhir_base, timeout=30) as c:
                manifest = wait_for_manifest(c, location, timeout=120)
                assert {item["type"] for item in manifest["output"]} == set(TYPES)
                for item in manifest["output"]:
                    lines = c.get(item["url"]).content.splitlines()
                    found = [orjson.loads(line)["id"] for line in lines]
                    assert len(found) == len(set(found)) == item["count"], f"{item['type']}: a resource twice"
                    assert set(found) == expected[item["type"]], item["type"]
                listed = _cli_list(url, folder)
            after = finished.stat()
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not written again
        job_id = location.rsplit("/", 1)[1]
        assert any(line.startswith(job_id) and "completed" in line for line in listed.splitlines()), listed


def _progress_when(c: httpx.Client, location: str, done) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = c.get(location)
        assert response.status_code == 202, response.text  # never finished before the kill
        text = response.headers["X-Progress"]
        if done(text):
            return text
        time.sleep(0.03)
    raise AssertionError("the export made no progress")


def _cli_list(database_url: str, folder: str) -> str:
    from tests.support.process import cli

    listed = cli(database_url, "export", "list", env={"FHIR_SERVER_EXPORT_DIR": folder})
    assert listed.returncode == 0, listed.stderr
    return listed.stdout

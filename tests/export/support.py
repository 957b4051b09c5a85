"""Bulk Data export tests: a server with the export worker on, over a database and an export folder of its own
(a system-level export holds everything in its database), a seeded population, and the client side of the flow
(kick-off, polling, manifest, files)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fhir_server.config import Settings
from tests.support.access_data import observation, srs
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
SURVEY, VITALS = "survey", "vital-signs"
LOW, HIGH = (20, 25, 30, 20), (90, 92, 95, 94)


@contextmanager
def export_server(backend: str, **settings: Any) -> Iterator[RunningServer]:
    """A server (authorization on) on a new database, exports written to a new folder."""
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with database as url, tempfile.TemporaryDirectory(prefix="fhir-exports-") as folder:
        values: dict[str, Any] = {
            "auth_required": True,
            "export_worker": True,
            "export_dir": folder,
            "export_poll_seconds": 0.1,
            "export_retry_after_seconds": 1,
            "export_page_size": 3,  # several keyset pages per type, even for a small population
            **settings,
        }
        with ServerThread(Settings(database_url=url, _env_file=None, **values), backend) as running:
            yield running


def admin(server: RunningServer, client_id: str = "admin-client") -> httpx.Client:
    return client_for(server, mint(server, "system/*.cruds", client_id=client_id, sub=client_id))


def kick_off(c: httpx.Client, path: str, params: Any = None, **headers: str) -> httpx.Response:
    return c.get(path, params=params, headers={**ASYNC, **headers})


def status_url(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def wait_for_manifest(c: httpx.Client, url: str, timeout: float = 90) -> dict[str, Any]:
    """Poll as a client would (202 with X-Progress and Retry-After) until the manifest (200)."""
    deadline = time.monotonic() + timeout
    while True:
        response = c.get(url, headers={"Accept": "application/json"})
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json")
            assert "Expires" in response.headers
            return response.json()
        assert response.status_code == 202, response.text
        assert response.headers["Retry-After"] and len(response.headers["X-Progress"]) < 100
        assert time.monotonic() < deadline, f"the export did not finish: {response.headers['X-Progress']}"
        time.sleep(0.1)


def read_output(c: httpx.Client, manifest: dict[str, Any]) -> dict[str, list[bytes]]:
    """Type → its NDJSON lines (raw bytes, as sent), every file of the manifest fetched with the client's token."""
    found: dict[str, list[bytes]] = {}
    for item in manifest["output"]:
        response = c.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        assert response.content.endswith(b"\n")
        lines = response.content.splitlines()
        assert len(lines) == item["count"], item
        found.setdefault(item["type"], []).extend(lines)
    return found


def ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["id"] for line in lines]


def export(c: httpx.Client, path: str, params: Any = None) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    manifest = wait_for_manifest(c, status_url(kick_off(c, path, params)))
    return manifest, read_output(c, manifest)


@dataclass
class Population:
    patients: list[str]  # three patients; the Group's members are the first two (the third's is inactive)
    group: str
    checkpoint: str = ""  # an instant: what was written after it is the _since export
    shared: str = ""  # an Observation about the first patient performed by the second (both compartments)
    deleted: str = ""  # an Observation of the first patient, deleted
    ids: dict[str, set[str]] = field(default_factory=dict)


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()


def seed(server: RunningServer, uid: str) -> Population:
    """Three patients with survey and vital-signs Observations and scored SRS sessions (Observations, Flags,
    Provenance); a Practitioner and an Organization; a Group; then, after a checkpoint, a second round of writes."""
    with admin(server) as c:
        patients = [f"ex{uid}-{n}" for n in (1, 2, 3)]
        for n, pid in enumerate(patients):
            _created(
                c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "name": [{"family": f"F{n}"}]})
            )
            for category in (SURVEY, VITALS):
                _created(c.post("/Observation", json=observation(pid, category)))
        for n, pid in enumerate(patients[:2]):
            _created(c.post("/QuestionnaireResponse", json=srs(pid, LOW, "2026-11-20T16:45:00Z", f"{uid}-a{n}")))
        _created(c.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Doc"}]}))
        _created(c.post("/Organization", json={"resourceType": "Organization", "name": f"Clinic {uid}"}))
        orphan = observation(patients[0])
        del orphan["subject"]  # no patient at all: outside every compartment
        _created(c.post("/Observation", json=orphan))
        shared = _created(
            c.post("/Observation", json=observation(patients[0], performer=[{"reference": f"Patient/{patients[1]}"}]))
        )
        deleted = _created(c.post("/Observation", json=observation(patients[0])))
        assert c.delete(f"/Observation/{deleted['id']}").status_code in (200, 204)
        members = [{"entity": {"reference": f"Patient/{p}"}} for p in patients[:2]]
        members.append({"entity": {"reference": f"Patient/{patients[2]}"}, "inactive": True})
        group = _created(
            c.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True, "member": members})
        )
        time.sleep(0.05)
        marker = _created(c.post("/Basic", json={"resourceType": "Basic", "code": {"text": "checkpoint"}}))
        checkpoint = marker["meta"]["lastUpdated"]
        time.sleep(0.05)
        # after the checkpoint: a new version of a patient, a new survey, a scored session of the third patient
        _created(
            c.put(
                f"/Patient/{patients[0]}",
                json={"resourceType": "Patient", "id": patients[0], "birthDate": "1990-01-01"},
            )
        )
        _created(c.post("/Observation", json=observation(patients[1], SURVEY)))
        _created(c.post("/QuestionnaireResponse", json=srs(patients[2], LOW, "2026-11-27T16:45:00Z", f"{uid}-b")))
    return Population(patients, group["id"], checkpoint, shared["id"], deleted["id"])

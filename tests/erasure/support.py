"""Helpers for the erasure tests: a server with erasure on, a patient's record made the ways the server makes them
(REST writes, a scored response, a read audited, rows of the write-back and message outboxes, an app session, a
form link, CDS feedback), and the database read back whole to see what is left of them."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import LargeBinary, MetaData, String, Text, create_engine, select

from fhir_server.cds_hooks.cards import card_id
from fhir_server.config import Settings
from fhir_server.store import app_sessions_store, cds_store, ehr_store, form_links_store, message_store
from fhir_server.store.engine import normalise_url
from fhir_server.store.records import utc_now
from tests.support.databases import fresh_database
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ERASER_SCOPE = "system/*.cruds fhir-server/expunge"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"


@contextmanager
def erasure_server(backend: str, **settings: Any) -> Iterator[RunningServer]:
    """A server (authorization on, erasure on unless told) on a new database, exports in a new folder."""
    with fresh_database(backend) as url, tempfile.TemporaryDirectory(prefix="fhir-erasure-exports-") as folder:
        values: dict[str, Any] = {
            "auth_required": True,
            "expunge_enabled": True,
            "export_dir": folder,
            "export_poll_seconds": 0.1,
            "export_retry_after_seconds": 1,
            **settings,
        }
        with ServerThread(Settings(database_url=url, _env_file=None, **values), backend) as running:
            yield running


def eraser(server: RunningServer) -> httpx.Client:
    """A Backend Services client allowed to erase (a token signed as the server's authorization server signs)."""
    return client_for(server, mint(server, ERASER_SCOPE, client_id="eraser", sub="eraser"))


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()


@dataclass
class Record:
    """One patient's record as the test made it."""

    patient: str
    family: str
    keys: set[tuple[str, str]] = field(default_factory=set)  # every resource written for them
    response: str = ""
    task: str = ""
    flag: str = ""

    def ids(self, resource_type: str) -> list[str]:
        return sorted(i for t, i in self.keys if t == resource_type)


def make_record(c: httpx.Client, patient: str, family: str, *, marks: int = 30) -> Record:
    """A Patient (two versions), a scored SRS (Observations, a Flag below the cutoff, the Provenance), an
    Observation in three versions, a Task asking for a measure, a Binary that is theirs, and an Observation deleted
    since (its versions are all that say whose it was)."""
    record = Record(patient, family)
    body = {"resourceType": "Patient", "id": patient, "name": [{"family": family, "given": ["Ana"]}]}
    created(c.put(f"/Patient/{patient}", json=body, headers=FHIR_JSON))
    body["birthDate"] = "1990-04-02"
    created(c.put(f"/Patient/{patient}", json=body, headers=FHIR_JSON))
    record.keys.add(("Patient", patient))
    response = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": SRS,
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-11-20T16:45:00Z",
        "item": [
            {"linkId": link, "answer": [{"valueInteger": marks}]}
            for link in ("relationship", "goals", "approach", "overall")
        ],
    }
    record.response = created(c.post("/QuestionnaireResponse", json=response, headers=FHIR_JSON))["id"]
    record.keys.add(("QuestionnaireResponse", record.response))
    for resource_type in ("Observation", "Flag", "Provenance"):
        found = c.get(f"/{resource_type}", params={"_count": "100", **_about(resource_type, record)}).json()
        record.keys |= {(resource_type, e["resource"]["id"]) for e in found.get("entry", [])}
    record.flag = next(iter(record.ids("Flag")), "")
    note = {
        "resourceType": "Observation",
        "status": "preliminary",
        "code": {"text": f"Note on {family}"},
        "subject": {"reference": f"Patient/{patient}"},
        "valueString": f"{family} said so",
    }
    note_id = created(c.post("/Observation", json=note, headers=FHIR_JSON))["id"]
    for status in ("final", "amended"):
        created(c.put(f"/Observation/{note_id}", json={**note, "id": note_id, "status": status}, headers=FHIR_JSON))
    record.keys.add(("Observation", note_id))
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
        "description": f"Please rate the session, {family}",
    }
    record.task = created(c.post("/Task", json=task, headers=FHIR_JSON))["id"]
    record.keys.add(("Task", record.task))
    binary = {
        "resourceType": "Binary",
        "contentType": "text/plain",
        "securityContext": {"reference": f"Patient/{patient}"},
    }
    binary["data"] = "aGVsbG8="
    record.keys.add(("Binary", created(c.post("/Binary", json=binary, headers=FHIR_JSON))["id"]))
    gone = created(c.post("/Observation", json={**note, "valueString": f"{family} was here"}, headers=FHIR_JSON))["id"]
    assert c.delete(f"/Observation/{gone}").status_code in (200, 204)
    record.keys.add(("Observation", gone))
    return record


def _about(resource_type: str, record: Record) -> dict[str, str]:
    if resource_type == "Provenance":
        return {"entity": f"QuestionnaireResponse/{record.response}"}
    return {"subject": f"Patient/{record.patient}"}


def add_side_rows(server: RunningServer, record: Record) -> None:
    """What the server keeps beside the resources for a patient: a write-back still to be delivered, an app
    session, a form link with its message, a clinician's comment on a card about the patient's Flag."""
    engine = server.app.state.engine
    repo = server.app.state.fhir.repo

    def queue(session: Any) -> None:
        ehr_store.enqueue(session, 4242, record.response, None)
        link = form_links_store.insert_link(
            session,
            {
                "token_hash": secrets.token_hex(32),
                "token": secrets.token_urlsafe(32),
                "recipient": f"{record.family.lower()}@example.org",
                "task_id": record.task,
                "patient": record.patient,
                "questionnaire": SRS,
                "channel": "email",
                "expires_at": utc_now(),
            },
        )
        message_store.enqueue(session, "form-link", link, "email", None)

    repo.write(queue)
    now = utc_now()
    app_sessions_store.insert_session(
        engine,
        {
            "session_hash": secrets.token_hex(32),
            "created_at": now,
            "expires_at": now,
            "csrf_token": secrets.token_hex(16),
            "submission_key": secrets.token_hex(16),
            "patient": record.patient,
            "response_id": record.response,
            "draft": f'{{"note": "{record.family}"}}',
        },
    )
    card = card_id("fit-alliance-patient-view", f"Patient/{record.patient}", f"flag|{record.flag}")
    feedback = {
        "service": "fit-alliance-patient-view",
        "card": card,
        "outcome": "overridden",
        "user_comment": f"discussed with {record.family}",
        "outcome_timestamp": "2026-11-20T17:00:00Z",
        "issuer": "https://ehr.example.org",
    }
    cds_store.add_feedback(engine, [feedback])


# -- the database read back -------------------------------------------------------------------------------------
def _engine(database_url: str) -> Any:
    return create_engine(normalise_url(database_url))


def every_text(database_url: str) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text or binary value in every table (the schema reflected, so a table added
    later is read too)."""
    engine = _engine(database_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        found = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
                if not columns:
                    continue
                for row in conn.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        if isinstance(value, bytes):
                            value = value.decode("utf-8", "replace")
                        if isinstance(value, str):
                            found.append((table.name, column.name, value))
        return found
    finally:
        engine.dispose()


def holding(database_url: str, *needles: str) -> list[str]:
    """Where any of ``needles`` (any case) is still in the database."""
    lowered = [n.lower() for n in needles]
    return [
        f"{table}.{column}: {value[:160]}"
        for table, column, value in every_text(database_url)
        if any(n in value.lower() for n in lowered)
    ]


def snapshot(database_url: str, keys: set[tuple[str, str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of these resources (current, versions, index), as stored: to compare before and after."""
    engine = _engine(database_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        taken: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                columns = table.columns
                if "resource_type" not in columns:
                    continue
                key = columns["id"] if table.name in ("resources", "resource_versions") else columns.get("resource_id")
                if key is None:
                    continue
                rows = []
                for resource_type, resource_id in sorted(keys):
                    query = select(table).where(columns["resource_type"] == resource_type, key == resource_id)
                    rows += [tuple(r) for r in conn.execute(query)]
                taken[table.name] = sorted(rows, key=repr)
        return taken
    finally:
        engine.dispose()

"""The parts of an export that need no server: the kick-off's parameters (export/request.py) and the file storage
(export/storage.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_server.auth.policy import Policy
from fhir_server.errors import FhirError
from fhir_server.export.request import ExportRequest, parse_request
from fhir_server.export.storage import DirectoryStorage
from fhir_server.search.registry import default_registry

JOB = "0123456789abcdef0123456789abcdef"


def parsed(level: str = "system", **params: str | list[str]) -> ExportRequest:
    pairs = [(k, v) for k, values in params.items() for v in ([values] if isinstance(values, str) else values)]
    return parse_request(level, None, pairs, policy=Policy.server(), registry=default_registry())


def test_type_filters_split_between_queries_not_inside_their_values():
    request = parsed(
        _type="Observation,Flag",
        _typeFilter=["Observation?status=final,amended&category=survey,Flag?patient=p1,p2", "Observation?code=x"],
    )
    assert request.type_filters == {
        "Observation": [[("status", "final,amended"), ("category", "survey")], [("code", "x")]],
        "Flag": [[("patient", "p1,p2")]],
    }


def test_a_request_survives_the_job_row():
    request = parsed(
        "patient",
        _type=["Patient", "Observation"],
        _since="2026-11-01T10:00:00.250+01:00",
        _typeFilter="Observation?category=survey",
        _elements="id,Patient.birthDate",
        includeAssociatedData="RelevantProvenanceResources,LatestProvenanceResources",  # the wider one wins
    )
    assert request.types == ("Patient", "Observation", "Provenance") and request.provenance_by_association
    assert request.since == datetime(2026, 11, 1, 9, 0, 0, 250000)  # naive UTC
    assert request.elements == {"*": ["id"], "Patient": ["birthDate"]}
    assert ExportRequest.from_json(request.to_json()) == request


def test_patient_level_types_are_the_compartment_and_audit_events_only_by_name():
    request = parsed("patient")
    assert request.types[0] == "Patient" and len(request.types) == len(set(request.types))
    assert "AuditEvent" not in request.types and "Binary" not in request.types and "Practitioner" not in request.types
    assert parsed("patient", _type="AuditEvent").types == ("AuditEvent",)
    with pytest.raises(FhirError) as refused:
        parsed("patient", _type="Practitioner")
    assert refused.value.status == 400 and "outside the Patient compartment" in str(refused.value)


def test_files_appear_whole_or_not_at_all_and_names_cannot_leave_the_folder(tmp_path):
    storage = DirectoryStorage(tmp_path)
    with storage.writer(JOB, "Patient.ndjson") as out:
        out.write(b'{"resourceType":"Patient"}\n')
        assert storage.read(JOB, "Patient.ndjson") is None  # still partial
    assert b"".join(storage.read(JOB, "Patient.ndjson") or []) == b'{"resourceType":"Patient"}\n'
    with pytest.raises(RuntimeError), storage.writer(JOB, "Flag.ndjson") as out:
        out.write(b"half")
        raise RuntimeError("the job stopped")
    assert sorted(p.name for p in (tmp_path / JOB).iterdir()) == ["Patient.ndjson"]  # no partial left behind
    assert (tmp_path / JOB).stat().st_mode & 0o777 == 0o700
    assert (tmp_path / JOB / "Patient.ndjson").stat().st_mode & 0o777 == 0o600
    for job, name in ((JOB, "../Patient.ndjson"), (JOB, "Patient.ndjson/.."), ("../" + JOB[3:], "Patient.ndjson")):
        assert storage.read(job, name) is None
        with pytest.raises(ValueError), storage.writer(job, name):
            pass
    assert storage.jobs() == [JOB]
    storage.remove(JOB)
    assert storage.jobs() == [] and storage.read(JOB, "Patient.ndjson") is None

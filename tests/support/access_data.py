"""Two clients' records for access tests: patient A and patient B, each with a scored SRS (QuestionnaireResponse,
Observations, Flags, Provenance), plus cross-patient references that a careless server would follow: A's
Observation ``derivedFrom`` B's response, and B's Observation whose ``focus`` is patient A."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.server import RunningServer
from tests.support.tokens import client_for, mint

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
PROBE_CODE = "http://example.org/probe|probe"


@dataclass
class Records:
    patient: str
    ids: dict[str, set[str]] = field(default_factory=dict)  # resource type → ids

    def all_ids(self) -> set[str]:
        return {i for ids in self.ids.values() for i in ids}

    def one(self, resource_type: str) -> str:
        return sorted(self.ids[resource_type])[0]


def srs(patient: str, marks: tuple[int, int, int, int], authored: str, identifier: str) -> dict[str, Any]:
    names = ("relationship", "goals", "approach", "overall")
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": SRS,
        "status": "completed",
        "identifier": {"system": "urn:test:submission", "value": identifier},
        "subject": {"reference": f"Patient/{patient}"},
        "author": {"reference": f"Patient/{patient}"},
        "authored": authored,
        "item": [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True)],
    }


def observation(patient: str, category: str = "survey", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": "http://example.org/probe", "code": "probe"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueInteger": 1,
        **extra,
    }


def admin(server: RunningServer) -> httpx.Client:
    return client_for(server, mint(server, "system/*.cruds"))


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()


def seed(server: RunningServer, uid: str) -> tuple[Records, Records]:
    with admin(server) as c:
        a, b = Records(f"pa-{uid}"), Records(f"pb-{uid}")
        for records, name in ((a, "Alpha"), (b, "Beta")):
            _ok(
                c.put(
                    f"/Patient/{records.patient}",
                    json={"resourceType": "Patient", "id": records.patient, "name": [{"family": f"{name}{uid}"}]},
                )
            )
            qr = _ok(
                c.post(
                    "/QuestionnaireResponse",
                    json=srs(records.patient, (80, 70, 85, 90), "2026-11-20T16:45:00Z", f"{name}-{uid}"),
                )
            )
            records.ids = {"Patient": {records.patient}, "QuestionnaireResponse": {qr["id"]}}
            searches = (
                ("Observation", "subject", f"Patient/{records.patient}"),
                ("Flag", "subject", f"Patient/{records.patient}"),
                ("Provenance", "entity", f"QuestionnaireResponse/{qr['id']}"),
            )
            for resource_type, param, value in searches:
                found = _ok(c.get(f"/{resource_type}", params={param: value, "_count": "100"}))
                records.ids[resource_type] = {e["resource"]["id"] for e in found.get("entry", [])}
            assert all(records.ids.values()), f"the SRS below 36 must have been scored: {records.ids}"
        link = _ok(
            c.post(
                "/Observation",
                json=observation(
                    a.patient, derivedFrom=[{"reference": f"QuestionnaireResponse/{b.one('QuestionnaireResponse')}"}]
                ),
            )
        )
        a.ids["Observation"].add(link["id"])
        focus = _ok(c.post("/Observation", json=observation(b.patient, focus=[{"reference": f"Patient/{a.patient}"}])))
        b.ids["Observation"].add(focus["id"])
        vitals = _ok(c.post("/Observation", json=observation(a.patient, "vital-signs")))
        a.ids["vital-signs"] = {vitals["id"]}
    return a, b


def returned_ids(body: Any) -> set[str]:
    """Ids of every resource in a response: the resource itself, Bundle entries, nested Bundles of a batch."""
    found: set[str] = set()
    if isinstance(body, dict):
        if body.get("resourceType") not in (None, "Bundle", "OperationOutcome", "Parameters") and "id" in body:
            found.add(body["id"])
        for value in body.values():
            found |= returned_ids(value)
    elif isinstance(body, list):
        for value in body:
            found |= returned_ids(value)
    return found

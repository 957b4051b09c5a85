"""A small hand-built practice for the indicator tests: an organisation with two programs, clinicians, clients with
birth dates and sessions submitted through the API (so scoring writes the Observations and Flags the reports
count), Flags acknowledged at chosen times, and reports asked for as a client would."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.scoring.attribution import CLINICIAN, PROGRAM
from fhir_server.scoring.resources import ACKNOWLEDGED
from tests.api.fhir import post, put

CANONICAL = "http://fit-fhir.org/fhir/Questionnaire/{}|1.0.2"
RESPONDENT = "http://fit-fhir.org/fhir/CodeSystem/fit-respondent"
WAI_FREQUENCY = "http://fit-fhir.org/fhir/CodeSystem/wai-frequency"
POPULATION_CODES = ("initial-population", "denominator", "denominator-exclusion", "numerator", "measure-population")


class Practice:
    def __init__(self, client: httpx.Client, uid: str) -> None:
        self.client, self.uid = client, uid
        self.org = f"Organization/{uid}-org"
        self.program_a, self.program_b = f"Organization/{uid}-a", f"Organization/{uid}-b"
        self.ca, self.cb = f"Practitioner/{uid}-ca", f"Practitioner/{uid}-cb"
        self._put(self.org, {"name": "Org"})
        self._put(self.program_a, {"name": "Adults", "partOf": {"reference": self.org}})
        self._put(self.program_b, {"name": "Youth", "partOf": {"reference": self.org}})
        for clinician in (self.ca, self.cb):
            self._put(clinician, {"name": [{"text": clinician}]})

    def _put(self, reference: str, body: dict[str, Any]) -> None:
        kind, _, ident = reference.partition("/")
        answer = put(self.client, f"/{reference}", {"resourceType": kind, "id": ident, **body})
        assert answer.status_code in (200, 201), answer.text

    def patient(self, key: str, born: str) -> str:
        ident = f"{self.uid}-{key}"
        self._put(f"Patient/{ident}", {"birthDate": born})
        return ident

    def session(
        self,
        patient: str,
        day: str,
        clinician: str,
        program: str,
        *,
        ors: int | None = None,
        srs: tuple[int, int, int, int] | None = None,
        wai: str | None = None,
        therapist: tuple[int, int, int, int] | None = None,
        encounter: bool = True,
    ) -> None:
        """ORS at 09:00, SRS at 09:50, WAI-SR at 09:55, the therapist's rating at 09:58 (marks in mm; ``ors``
        marks every line the same)."""
        shared = {
            "status": "completed",
            "subject": {"reference": f"Patient/{patient}"},
            "author": {"reference": f"Patient/{patient}"},
            "extension": [
                {"url": CLINICIAN, "valueReference": {"reference": clinician}},
                {"url": PROGRAM, "valueReference": {"reference": program}},
            ],
        }
        if encounter:
            shared["encounter"] = {"reference": f"Encounter/{patient}-{day}"}
        if ors is not None:
            self_rated = {"linkId": "respondent", "answer": [{"valueCoding": {"system": RESPONDENT, "code": "self"}}]}
            lines = [
                {"linkId": n, "answer": [{"valueInteger": ors}]}
                for n in ("individually", "interpersonally", "socially", "overall")
            ]
            self._submit(shared, "ors", f"{day}T09:00:00Z", [self_rated, *lines])
        if srs is not None:
            names = ("relationship", "goals", "approach", "overall")
            lines = [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, srs, strict=True)]
            self._submit(shared, "srs", f"{day}T09:50:00Z", lines)
        if wai is not None:
            items = [
                {"linkId": f"wai-sr-{n}", "answer": [{"valueCoding": {"system": WAI_FREQUENCY, "code": wai}}]}
                for n in range(1, 13)
            ]
            self._submit(shared, "wai-sr", f"{day}T09:55:00Z", items)
        if therapist is not None:
            names = ("relationship", "goals", "approach", "overall")
            lines = [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, therapist, strict=True)]
            rated = {**shared, "author": {"reference": clinician}}
            self._submit(rated, "srs-therapist", f"{day}T09:58:00Z", lines, version="1.0.1")

    def _submit(
        self, shared: dict[str, Any], instrument: str, authored: str, items: list[dict[str, Any]], version: str = ""
    ) -> None:
        canonical = CANONICAL.format(instrument)
        if version:
            canonical = f"{canonical.partition('|')[0]}|{version}"
        response = {"resourceType": "QuestionnaireResponse", "questionnaire": canonical}
        response.update(shared, authored=authored, item=items)
        answer = post(self.client, "/QuestionnaireResponse", response)
        assert answer.status_code in (200, 201), answer.text

    def acknowledge(self, patient: str, raised: str, at: str) -> int:
        """Acknowledge, at ``at``, every active Flag of the client raised at ``raised`` (as the clinician view does)."""
        found = self.client.get("/Flag", params={"patient": patient, "status": "active", "_count": "50"}).json()
        count = 0
        for entry in found.get("entry", []):
            flag = entry["resource"]
            if flag["period"]["start"] != raised:
                continue
            flag["status"] = "inactive"
            flag["period"]["end"] = at
            by = {"url": "by", "valueReference": {"reference": self.ca}}
            flag.setdefault("extension", []).append(
                {"url": ACKNOWLEDGED, "extension": [by, {"url": "at", "valueDateTime": at}]}
            )
            answer = put(self.client, f"/Flag/{flag['id']}", flag)
            assert answer.status_code == 200, answer.text
            count += 1
        return count

    def report(self, measure: str, start: str = "2026-01", end: str = "2026-06", **params: str) -> dict[str, Any]:
        query = {"measure": measure, "periodStart": start, "periodEnd": end, "subject": self.org, **params}
        answer = self.client.get("/Measure/$evaluate-measure", params=query)
        assert answer.status_code == 200, answer.text
        return answer.json()


def counts(part: dict[str, Any]) -> dict[str, int]:
    """A group's or stratum's population counts by code."""
    return {p["code"]["coding"][0]["code"]: p["count"] for p in part["population"]}


def score(part: dict[str, Any]) -> float | None:
    return part.get("measureScore", {}).get("value")


def clients(part: dict[str, Any]) -> int:
    return next(e["valueInteger"] for e in part["extension"] if e["url"].endswith("/measurereport-clients"))


def strata(group: dict[str, Any], stratifier: str) -> dict[str, dict[str, Any]]:
    """One stratifier's strata by their value."""
    found = next(s for s in group["stratifier"] if s["code"][0]["coding"][0]["code"] == stratifier)
    return {s["value"]["text"]: s for s in found["stratum"]}


def post_report(client: httpx.Client, report: dict[str, Any]) -> httpx.Response:
    return post(client, "/MeasureReport", report)

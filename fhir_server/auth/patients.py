"""Patients as the authorization server's pages need them: a short list for the patient picker and existence
checks for launch contexts.  Read-only use of the FHIR interactions (engine/interactions.py), unguarded: these are
the authorization server's own decisions, made for a signed-in user allowed to choose patients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_server import fhirjson
from fhir_server.errors import FhirError

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
PICKER_PAGE = 20


class Reader(Protocol):
    def read(self, resource_type: str, resource_id: str) -> Any: ...
    def parse_query(self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False) -> Any: ...
    def search(self, query: Any) -> Any: ...


@dataclass(frozen=True)
class PatientChoice:
    id: str
    name: str
    birth_date: str


class PatientDirectory:
    def __init__(self, fhir: Reader) -> None:
        self.fhir = fhir

    def exists(self, resource_type: str, resource_id: str) -> bool:
        if not FHIR_ID.fullmatch(resource_id):
            return False
        try:
            self.fhir.read(resource_type, resource_id)
        except FhirError:  # unknown, deleted or malformed: all "no such record"
            return False
        return True

    def search(self, text: str) -> list[PatientChoice]:
        """Patients whose name starts with ``text`` (all when empty), at most PICKER_PAGE of them.  Raises
        FhirError for text the search cannot use."""
        params = [("_count", str(PICKER_PAGE))]
        if text.strip():
            params.append(("name", text.strip()))
        result = self.fhir.search(self.fhir.parse_query("Patient", params))
        return [_choice(stored) for stored in result.outcome.matches if stored.content]


def _choice(stored: Any) -> PatientChoice:
    resource = fhirjson.loads_stored(stored.content)
    return PatientChoice(stored.id, display_name(resource), str(resource.get("birthDate", "")))


def display_name(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(str(g) for g in name.get("given") or []), str(name.get("family") or "")]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return "(no name)"

"""The instruments' golden examples (questionnaires/<id>/examples/*.json), shared by the tests that run them."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.config import PROJECT_ROOT

QUESTIONNAIRES = PROJECT_ROOT / "questionnaires"
TERMINOLOGY = PROJECT_ROOT / "terminology"


@dataclass(frozen=True)
class Example:
    instrument: str
    path: Path
    response: dict[str, Any]
    expect: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.instrument}/{self.path.stem}"

    def for_patient(self, patient_id: str) -> dict[str, Any]:
        """The response, made this test's own (its subject, no identifier shared with other tests)."""
        response = json.loads(json.dumps(self.response))
        response["subject"] = {"reference": f"Patient/{patient_id}"}
        response["identifier"] = {"system": "urn:test:submission", "value": str(uuid.uuid4())}
        return response


def all_examples() -> list[Example]:
    out = []
    for path in sorted(QUESTIONNAIRES.glob("*/examples/*.json")):
        data = json.loads(path.read_text())
        out.append(Example(path.parent.parent.name, path, data["response"], data["expect"]))
    return out


def link_id_at(response: dict[str, Any], expression: str) -> str | None:
    """The linkId an issue's FHIRPath expression points at (``item[2].answer[0]`` or ``where(linkId='x')``)."""
    named = re.search(r"where\(linkId='([^']+)'\)", expression)
    if named:
        return named.group(1)
    node: Any = response
    link_id = None
    for key, index in re.findall(r"\.(item|answer)\[(\d+)\]", expression):
        node = node.get(key, [])[int(index)]
        link_id = node.get("linkId", link_id)
    return link_id

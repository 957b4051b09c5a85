"""Names for what the supervision page shows.  Strata are references (``Organization/x``, ``Practitioner/y``,
``PractitionerRole/z``); the page names them as this server's store has them — ``Organization.name``, a
Practitioner's name, a PractitionerRole by its practitioner's — which is the practice's own directory, not patient
data.  A reference the store does not hold (or holds without a name) is shown as it is.

Also the organisations a supervisor may choose from, nested as ``Organization.partOf`` nests them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server import fhirjson
from fhir_server.store.repository import Repository

UNKNOWN = "unknown"  # the stratum of members without a program or clinician (store/report_counts.py)
UNKNOWN_NAMES = {"program": "No program recorded", "clinician": "No clinician recorded"}


@dataclass(frozen=True)
class Option:
    reference: str  # Organization/x
    name: str
    depth: int  # 0 for an organisation the user supervises at the top, 1 for one nested in it, ...


def _resource(repo: Repository, reference: str) -> dict[str, Any] | None:
    kind, _, ident = reference.partition("/")
    if kind not in ("Organization", "Practitioner", "PractitionerRole") or not ident or "/" in ident:
        return None
    stored = repo.read(kind, ident)
    if stored is None or stored.deleted or not stored.content:
        return None
    found = fhirjson.loads_stored(stored.content)
    return found if isinstance(found, dict) else None


def _person(resource: dict[str, Any]) -> str | None:
    name = next((n for n in resource.get("name") or [] if isinstance(n, dict)), {})
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return text if isinstance(text, str) and text else None


def name_of(repo: Repository, reference: str) -> str:
    resource = _resource(repo, reference)
    if resource is None:
        return reference
    kind = reference.partition("/")[0]
    if kind == "Organization":
        name = resource.get("name")
        return name if isinstance(name, str) and name else reference
    if kind == "Practitioner":
        return _person(resource) or reference
    practitioner = (resource.get("practitioner") or {}).get("reference")
    person = _resource(repo, practitioner) if isinstance(practitioner, str) else None
    return f"{_person(person) or practitioner} (role)" if person or practitioner else reference


def names(repo: Repository, references: Iterable[str], stratifier: str) -> dict[str, str]:
    """Each reference's name; ``unknown`` (no program or clinician recorded) in words."""
    return {r: UNKNOWN_NAMES.get(stratifier, r) if r == UNKNOWN else name_of(repo, r) for r in references}


def options(repo: Repository, organizations: Iterable[str]) -> list[Option]:
    """The organisations, each after its parent among them, siblings by name."""
    read = {o: _resource(repo, o) or {} for o in organizations}
    parents = {o: (r.get("partOf") or {}).get("reference") for o, r in read.items()}
    label = {o: r.get("name") if isinstance(r.get("name"), str) and r.get("name") else o for o, r in read.items()}
    children: dict[str | None, list[str]] = {}
    for org, parent in parents.items():
        children.setdefault(parent if parent in read and parent != org else None, []).append(org)
    found: list[Option] = []
    seen: set[str] = set()

    def visit(parent: str | None, depth: int) -> None:
        for org in sorted(children.get(parent, []), key=lambda o: (label[o].lower(), o)):
            if org not in seen:  # partOf can loop in bad data: each organisation once
                seen.add(org)
                found.append(Option(org, label[org], depth))
                visit(org, depth + 1)

    visit(None, 0)
    for org in sorted(set(read) - seen):  # a loop with no way in from the top
        found.append(Option(org, label[org], 0))
    return found

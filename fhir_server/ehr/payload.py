"""What one outbox row sends: the QuestionnaireResponse and everything scoring derived from it, read from the local
store at send time, shaped for an EHR that assigns its own ids.

- The results are found through the scoring Provenance (``<response id>-scoring``), whose targets are every
  Observation and Flag the scoring wrote, including earlier Flags it closed.
- Every resource carries a stable key, so a retried delivery matches what an earlier attempt stored instead of
  duplicating it.  Resources still at version 1 are creates if the key is not there (the EHR's copy is never
  overwritten); resources changed since they were written (a closed Flag, an amended response) are updates of the
  copy the key finds, so the change reaches the EHR too.  How the key is honoured — conditional writes or a search
  first — depends on the EHR (ehr/capabilities.py).
- Provenance has no ``identifier`` in R4: its key travels as a ``meta.tag`` and is matched with ``_tag``.
- References between the resources sent become ``urn:uuid:`` fullUrls; the scoring engine Device and resources the
  EHR does not take become logical (identifier) references; patient, encounter and author references are the
  launch context's, already the EHR's, and stay as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fhir_server import fhirjson
from fhir_server.canonical import BASE, SCORED_AT_SOURCE, WRITE_BACK_TAG
from fhir_server.scoring.resources import ENGINE, ENGINE_DEVICE_ID, derived_id
from fhir_server.store.records import Stored
from fhir_server.store.repository import Repository

RESPONSE_IDENTIFIER = f"{BASE}/questionnaire-response"
DEVICE_IDENTIFIER = f"{BASE}/device"
_ORDER = {"QuestionnaireResponse": 0, "Observation": 1, "Flag": 2, "Provenance": 3}
_NAMESPACE = uuid.UUID("5b0c3a53-7f5e-4c59-9d1e-8e0f6a1f2c11")


class PayloadError(Exception):
    """The row cannot be sent, now or later (its response is gone locally)."""


@dataclass
class Entry:
    resource_type: str
    local_id: str
    full_url: str  # urn:uuid, stable for a given local resource
    resource: dict[str, Any]  # without id/meta; references to other entries are their full_url
    criteria: str  # the conditional write's search, e.g. identifier=system%7Cvalue
    update: bool  # conditional update (changed since first written) rather than conditional create

    @property
    def conditional_url(self) -> str:
        return f"{self.resource_type}?{self.criteria}"


def build(repo: Repository, response_id: str, resource_types: tuple[str, ...]) -> list[Entry]:
    """The entries to send, in an order where every entry comes after the entries it references."""
    response = _current(repo, "QuestionnaireResponse", response_id)
    if response is None:
        raise PayloadError("the QuestionnaireResponse no longer exists locally")
    found = [response]
    provenance = _current(repo, "Provenance", derived_id(response_id, "scoring"))
    if provenance is not None:
        for target in fhirjson.loads_stored(provenance.content or "{}").get("target", []):
            kind, _, rid = str(target.get("reference", "")).partition("/")
            stored = _current(repo, kind, rid) if kind and rid else None
            if stored is not None:
                found.append(stored)
        found.append(provenance)
    parsed = {(s.resource_type, s.id): (s, fhirjson.loads_stored(s.content or "{}")) for s in found}
    sent = {key: f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(key))}" for key in parsed if key[0] in resource_types}
    logical = {f"{t}/{i}": _logical_reference(t, i, body) for (t, i), (_, body) in parsed.items()}
    logical[ENGINE["reference"]] = {
        "identifier": {"system": DEVICE_IDENTIFIER, "value": ENGINE_DEVICE_ID},
        "display": ENGINE["display"],
    }
    by_reference = {f"{t}/{i}": url for (t, i), url in sent.items()}
    entries = []
    for key, url in sent.items():
        stored, body = parsed[key]
        resource, criteria = _keyed(key[0], key[1], body, scored=provenance is not None)
        entries.append(
            Entry(
                resource_type=key[0],
                local_id=key[1],
                full_url=url,
                resource=_rewrite(resource, by_reference, logical),
                criteria=criteria,
                update=stored.version_id > 1,
            )
        )
    return _dependency_order(entries)


def resolve(resource: dict[str, Any], assigned: dict[str, str]) -> dict[str, Any]:
    """For one-request-per-resource delivery: fullUrls of entries already sent → the EHR's ``Type/id``."""
    return _map_references(resource, lambda ref: {"reference": assigned[ref]} if ref in assigned else None)


# -- internals ----------------------------------------------------------------------------------------------------
def _current(repo: Repository, resource_type: str, resource_id: str) -> Stored | None:
    stored = repo.read(resource_type, resource_id)
    return None if stored is None or stored.deleted else stored


def _identifier(resource_type: str, body: dict[str, Any]) -> dict[str, str] | None:
    value = body.get("identifier")
    for identifier in value if isinstance(value, list) else [value]:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            return {"system": identifier["system"], "value": identifier["value"]}
    return None


def _keyed(resource_type: str, local_id: str, body: dict[str, Any], *, scored: bool) -> tuple[dict[str, Any], str]:
    """The resource without our id and meta, carrying the key of its conditional write, and that key's search.  A
    scored response says so (its results travel with it: a receiving server must not score it again)."""
    resource = {k: v for k, v in body.items() if k not in ("id", "meta")}
    identifier = _identifier(resource_type, body)
    if identifier is None and resource_type == "QuestionnaireResponse":
        # A response submitted without one gets a key from its local id (QuestionnaireResponse.identifier is 0..1).
        identifier = {"system": RESPONSE_IDENTIFIER, "value": local_id}
        resource["identifier"] = identifier
    if resource_type == "QuestionnaireResponse" and scored:
        resource["meta"] = {"tag": [{"system": WRITE_BACK_TAG, "code": SCORED_AT_SOURCE}]}
    if identifier is not None:
        return resource, urlencode({"identifier": f"{identifier['system']}|{identifier['value']}"})
    resource["meta"] = {"tag": [{"system": WRITE_BACK_TAG, "code": f"{resource_type}/{local_id}"}]}
    return resource, urlencode({"_tag": f"{WRITE_BACK_TAG}|{resource_type}/{local_id}"})


def _logical_reference(resource_type: str, local_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """How a resource the EHR does not receive is referred to there: by identifier, when it has one."""
    identifier = _identifier(resource_type, body)
    if identifier is None and resource_type == "QuestionnaireResponse":
        identifier = {"system": RESPONSE_IDENTIFIER, "value": local_id}
    return {"type": resource_type, "identifier": identifier} if identifier else None


def _rewrite(
    resource: dict[str, Any], sent: dict[str, str], logical: dict[str, dict[str, Any] | None]
) -> dict[str, Any]:
    def replace(reference: str) -> dict[str, Any] | None:
        if reference in sent:
            return {"reference": sent[reference]}
        if logical.get(reference) is not None:
            return {"logical": logical[reference]}
        return None  # the launch context's references (patient, encounter, author) are the EHR's own

    return _map_references(resource, replace)


def _map_references(node: Any, replace: Any) -> Any:
    """Copy ``node`` with each Reference whose ``reference`` ``replace`` maps rewritten: a new reference string,
    or (``logical``) the Reference's identifier form, keeping its display."""
    if isinstance(node, list):
        return [_map_references(item, replace) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("reference")
    change = replace(reference) if isinstance(reference, str) else None
    out = {k: (v if k == "div" else _map_references(v, replace)) for k, v in node.items()}
    if change is not None and "reference" in change:
        out["reference"] = change["reference"]
    elif change is not None:
        del out["reference"]
        out = {**change["logical"], **out}
    return out


def _references(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["reference"]} if isinstance(node.get("reference"), str) else set()
    return found.union(*(_references(v) for k, v in node.items() if k != "div"))


def _dependency_order(entries: list[Entry]) -> list[Entry]:
    """Referenced entries first (the one-request-per-resource mode needs the EHR's id before it can refer)."""
    remaining = sorted(entries, key=lambda e: (_ORDER.get(e.resource_type, 9), e.local_id))
    urls = {e.full_url for e in entries}
    done: set[str] = set()
    ordered: list[Entry] = []
    while remaining:
        ready = next((e for e in remaining if (_references(e.resource) & urls) - {e.full_url} <= done), None)
        if ready is None:  # a reference cycle: our resources never form one
            raise PayloadError("the resources to send refer to each other in a cycle")
        ordered.append(ready)
        done.add(ready.full_url)
        remaining.remove(ready)
    return ordered

"""What an EHR says it can do, read from its CapabilityStatement, and how each write-back entry is therefore sent.

Exactly-once delivery rests on the EHR finding what an earlier attempt stored.  Where the CapabilityStatement
declares it, the EHR does that itself: a conditional create (``If-None-Exist``) or a conditional update
(``PUT Type?key``).  Where it does not (Epic, Cerner and many others offer neither), we do it ourselves: search
for the key first, then create only what is not there, or update the one copy found by its id — the fallback
HAPI's and Medplum's clients use.  An absent ``conditionalCreate``/``conditionalUpdate`` counts as not offered:
R4 gives the flags no default, and guessing wrong would create duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.ehr import payload
from fhir_server.ehr.payload import Entry


@dataclass(frozen=True)
class EhrCapabilities:
    transaction: bool
    conditional_create: frozenset[str]  # resource types
    conditional_update: frozenset[str]

    def writes_conditionally(self, entry: Entry) -> bool:
        """Whether the EHR itself matches this entry's key (else we search for it before writing)."""
        offered = self.conditional_update if entry.update else self.conditional_create
        return entry.resource_type in offered


def read_capabilities(statement: Any) -> EhrCapabilities:
    """From a CapabilityStatement (a parsed JSON object); raises ValueError when it is not one."""
    if not isinstance(statement, dict) or statement.get("resourceType") != "CapabilityStatement":
        raise ValueError("not a CapabilityStatement")
    transaction = False
    create: set[str] = set()
    update: set[str] = set()
    for rest in _objects(statement.get("rest")):
        if rest.get("mode", "server") != "server":
            continue
        transaction |= any(i.get("code") == "transaction" for i in _objects(rest.get("interaction")))
        for resource in _objects(rest.get("resource")):
            kind = resource.get("type")
            if not isinstance(kind, str):
                continue
            interactions = {i.get("code") for i in _objects(resource.get("interaction"))}
            if resource.get("conditionalCreate") is True and "create" in interactions:
                create.add(kind)
            if resource.get("conditionalUpdate") is True and "update" in interactions:
                update.add(kind)
    return EhrCapabilities(transaction, frozenset(create), frozenset(update))


@dataclass(frozen=True)
class Step:
    """One write of the delivery: ``url`` is relative to the EHR's base (``Flag``, ``Flag?identifier=…`` or
    ``Flag/123``)."""

    entry: Entry
    method: str
    url: str
    if_none_exist: str | None = None

    def body(self, assigned: dict[str, str]) -> dict[str, Any]:
        """The resource to send: references to entries the EHR already holds become its ``Type/id``; an update
        by id carries that id (FHIR requires the body's id to match the URL)."""
        resource = payload.resolve(self.entry.resource, assigned)
        if self.method == "PUT" and "?" not in self.url:
            resource = {"resourceType": self.entry.resource_type, "id": self.url.rpartition("/")[2], **resource}
        return resource


def plan(entries: list[Entry], capabilities: EhrCapabilities, found: dict[str, str | None]) -> list[Step]:
    """The writes for ``entries``.  ``found`` holds, for each entry the EHR cannot match itself, the id of the copy
    a search found (None: not there).  An entry already there and unchanged is not written again."""
    steps = []
    for entry in entries:
        if capabilities.writes_conditionally(entry):
            if entry.update:
                steps.append(Step(entry, "PUT", entry.conditional_url))
            else:
                steps.append(Step(entry, "POST", entry.resource_type, if_none_exist=entry.criteria))
            continue
        existing = found.get(entry.full_url)
        if existing is None:
            steps.append(Step(entry, "POST", entry.resource_type))
        elif entry.update:
            steps.append(Step(entry, "PUT", f"{entry.resource_type}/{existing}"))
    return steps


def transaction_bundle(steps: list[Step], assigned: dict[str, str]) -> dict[str, Any]:
    entries = []
    for step in steps:
        request = {"method": step.method, "url": step.url}
        if step.if_none_exist:
            request["ifNoneExist"] = step.if_none_exist
        entries.append({"fullUrl": step.entry.full_url, "resource": step.body(assigned), "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

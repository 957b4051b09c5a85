"""What an erasure touches, decided inside its transaction (README, "Erasure and retention").

A patient's record is what the access policy already calls theirs (auth/access.py): the Patient, and every resource
of the Patient compartment's types (and PATIENT_REFERENCES: a Task) with a patient reference to them through one
of the compartment's parameters; a Binary whose ``securityContext`` is the patient; the scoring Provenance of
erased results (every target erased); a Subscription filtered on the patient or created by the patient's token.
Soft-deleted resources count too: a deletion removed their index rows, so their last version is read.

Three kinds of record name the patient without being theirs, and keep a pseudonym in place of the patient (and of
every erased resource) instead of being removed: AuditEvents (the access trail stays: who read "a patient",
when), another Patient's ``link`` and a Group's ``member`` (another person's record, a list of many), and any other
resource that refers to the patient through a parameter outside the compartment.  An erasure of one resource
removes that resource; AuditEvents that name it keep a pseudonym.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson

from fhir_server import fhirjson, models
from fhir_server.auth.access import PATIENT_REFERENCES, AccessPolicy
from fhir_server.erasure.names import base64_needles, refers_to
from fhir_server.search.compartments import COMPARTMENTS
from fhir_server.search.registry import Registry
from fhir_server.store import expunge as store
from fhir_server.store import expunge_rows as rows
from fhir_server.store.session import WriteSession

Key = tuple[str, str]
# Records of others, or of the access to the patient's: renamed, never erased with the patient.
KEPT_TYPES = frozenset({"AuditEvent", "Patient", "Group"})
ANY_QUERY = '"query":"'  # every AuditEvent recording a search, when an id is too short to narrow the scan


@dataclass
class Plan:
    patient: str | None  # None: the erasure of one resource
    erase: set[Key] = field(default_factory=set)
    rename: set[Key] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)  # delivery rows of erased Subscriptions
    # AuditEvents whose base64 query may carry the patient's id: renamed when the renaming changes them.
    query_candidates: dict[Key, str] = field(default_factory=dict)

    def ids(self, resource_type: str) -> list[str]:
        return sorted(i for t, i in self.erase if t == resource_type)


def reference_params(registry: Registry, types: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Each type's indexed reference parameters: where the reference index can name a patient or a resource."""
    chosen = sorted(models.R4_RESOURCE_TYPES) if types is None else list(types)
    found = {t: sorted({p.code for p in registry.indexed_for(t) if p.type == "reference"}) for t in chosen}
    return {t: codes for t, codes in found.items() if codes}


def patient_plan(session: WriteSession, registry: Registry, rules: AccessPolicy, patient_id: str) -> Plan:
    plan = Plan(patient_id)
    params = reference_params(registry)
    compartment = {**COMPARTMENTS["Patient"](), **PATIENT_REFERENCES}
    patient = ("Patient", patient_id)
    for resource_type, resource_id, param, _, _ in store.references_to(session, params, [patient]):
        key = (resource_type, resource_id)
        if resource_type not in KEPT_TYPES and param in compartment.get(resource_type, ()):
            plan.erase.add(key)
        else:
            plan.rename.add(key)
    if store.existing(session, [patient]) or store.has_versions(session, patient):
        plan.erase.add(patient)
    reference = f"Patient/{patient_id}"
    for resource_id, content in store.current_containing(session, "Binary", [reference]):
        if patient_id in rules.patients_of("Binary", fhirjson.loads_stored(content)):
            plan.erase.add(("Binary", resource_id))
    for resource_type, resource_id, content in store.deleted_containing(session, reference):
        key = (resource_type, resource_id)
        if resource_type not in KEPT_TYPES and patient_id in rules.patients_of(
            resource_type, fhirjson.loads_stored(content)
        ):
            plan.erase.add(key)
        elif refers_to(content, {reference}):
            plan.rename.add(key)
    _subscriptions(session, plan, patient_id)
    _dependents(session, plan, params, exclude={patient})
    plan.query_candidates = audit_queries(session, patient_id)
    plan.rename -= plan.erase
    return plan


def audit_queries(session: WriteSession, patient_id: str, since: datetime | None = None) -> dict[Key, str]:
    """The AuditEvents (stored since ``since``) whose base64 query may carry the patient's id: candidates, each
    checked decoded by the renaming."""
    needles = base64_needles(patient_id)
    found = store.current_containing(session, "AuditEvent", needles if all(needles) else [ANY_QUERY], since=since)
    return {("AuditEvent", resource_id): content for resource_id, content in found}


def resource_plan(session: WriteSession, registry: Registry, key: Key) -> Plan:
    """One resource: itself (a Subscription with its delivery row), and the AuditEvents naming it, renamed."""
    plan = Plan(None)
    if store.existing(session, [key]) or store.has_versions(session, key):
        plan.erase.add(key)
        if key[0] == "Subscription":
            plan.subscriptions.add(key[1])
        params = reference_params(registry, ["AuditEvent"])
        plan.rename = {(t, i) for t, i, _, _, _ in store.references_to(session, params, [key])} - plan.erase
    return plan


def _subscriptions(session: WriteSession, plan: Plan, patient_id: str) -> None:
    """Subscriptions that filter on the patient, or that the patient's own token created."""
    reference = f"Patient/{patient_id}"
    for subscription_id, filters, caller in rows.subscription_rows(session):
        claims = orjson.loads(caller or "{}")
        named = any(_query_names(f, patient_id, reference) for f in orjson.loads(filters or "[]"))
        if named or (isinstance(claims, dict) and claims.get("patient") == patient_id):
            plan.erase.add(("Subscription", subscription_id))
            plan.subscriptions.add(subscription_id)


def _query_names(query: Any, patient_id: str, reference: str) -> bool:
    if not isinstance(query, str):
        return False
    criteria = query.partition("?")[2] if "?" in query else query  # stored as ``patient=Patient/x``
    values = [v for part in criteria.split("&") for v in part.partition("=")[2].split(",")]
    return any(unquote(v) == patient_id or refers_to(unquote(v), {reference}) for v in values)


def _dependents(session: WriteSession, plan: Plan, params: dict[str, list[str]], exclude: set[Key]) -> None:
    """What refers to an erased resource: a Provenance all of whose targets are erased goes with them (the scoring
    Provenance of the patient's results); anything else keeps a pseudonym of what it named."""
    targets = plan.erase - exclude
    if not targets:
        return
    provenances = {key for key in plan.rename if key[0] == "Provenance"}
    for resource_type, resource_id, _, _, _ in store.references_to(session, params, targets):
        key = (resource_type, resource_id)
        if key in plan.erase:
            continue
        (provenances if resource_type == "Provenance" else plan.rename).add(key)
    erased = {f"{t}/{i}" for t, i in plan.erase}
    gone: set[Key] = set()
    for key, content in store.existing(session, provenances).items():
        resource = fhirjson.loads_stored(content) if content else {}
        named = [t.get("reference") for t in resource.get("target", []) if isinstance(t, dict)]
        if named and all(isinstance(r, str) and r in erased for r in named):
            gone.add(key)
        else:
            plan.rename.add(key)
    plan.erase |= gone
    if gone:  # the access trail of those Provenances keeps a pseudonym of them too
        audit = _only(params, "AuditEvent")
        plan.rename |= {(t, i) for t, i, _, _, _ in store.references_to(session, audit, gone)}


def _only(params: dict[str, list[str]], resource_type: str) -> dict[str, list[str]]:
    return {resource_type: params[resource_type]} if resource_type in params else {}

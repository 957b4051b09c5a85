"""Erasure: a patient's whole record, or one resource, removed for good in one database transaction (what to touch:
plan.py), with what it leaves behind renamed (names.py), one AuditEvent for the erasure itself, and the Bulk Data
files that may hold the patient removed once it has committed (exports.py).  Who may run it is the operation's
concern (operations/expunge.py); this module is the server acting for itself.

Write-back: while any of the erased responses is still to be delivered to an EHR the erasure is refused (409,
naming how many), unless forced: a forced erasure drops those deliveries, and what the EHR already holds is the
EHR's to erase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_server import fhirjson
from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.audit import FLUSH_SECONDS, Access, build_event
from fhir_server.auth.caller import Caller
from fhir_server.canonical import BASE
from fhir_server.erasure import cds, exports
from fhir_server.erasure.names import Renaming, json_names_patient
from fhir_server.erasure.plan import Key, Plan, audit_queries, patient_plan, reference_params, resource_plan
from fhir_server.errors import FhirError, not_found
from fhir_server.export.storage import ExportStorage
from fhir_server.ids import new_id
from fhir_server.store import expunge as store
from fhir_server.store import expunge_rows as rows
from fhir_server.store import secret_store
from fhir_server.store.crypto import Keyring
from fhir_server.store.records import utc_now
from fhir_server.store.session import WriteSession

EXPUNGE_SUBTYPE = {"system": f"{BASE}/CodeSystem/audit-subtype", "code": "expunge", "display": "Erasure ($expunge)"}
# Reads of the patient recorded by another server process just before the erasure reach the database one audit flush
# later: a second pass renames them.
LATE_AUDIT_SECONDS = 5 * FLUSH_SECONDS
RENAME_BATCH = 200  # records renamed per round (their versions are read whole)
# The other tables' rows an erasure removes, as counted (Erased.rows).
ROW_KINDS = (
    "app sessions", "cds feedback", "conditional keys", "form links", "grants and sign-ins", "launches", "messages",
    "subscription events", "subscriptions", "user accounts", "write-back deliveries",
)  # fmt: skip


@dataclass
class Erased:
    """What an erasure did, counted (the operation's answer and the expunge AuditEvent)."""

    pseudonym: str
    resources: int = 0
    versions: int = 0
    index_rows: int = 0
    renamed: int = 0  # records that keep a pseudonym of what they named
    rows: dict[str, int] = field(default_factory=dict)  # other tables: rows removed
    export_jobs: int = 0

    def details(self) -> list[tuple[str, int]]:
        """What the transaction did (export files are removed after it)."""
        counted = [("resources", self.resources), ("versions", self.versions), ("renamed", self.renamed)]
        return counted + sorted(self.rows.items())


def _keyring(fhir: Any) -> Keyring:
    ring = secret_store.keyring(fhir.repo.engine)
    if not ring.configured:
        raise FhirError(  # `serve` refuses to start so (cli.py); an app built another way answers this
            503,
            "exception",
            "$expunge needs the server's secret key (FHIR_SERVER_SECRET_KEY or FHIR_SERVER_SECRET_KEY_FILE): the "
            "audit trail names an erased patient by a pseudonym made with it",
        )
    return ring


def expunge_patient(fhir: Any, patient_id: str, caller: Caller, storage: ExportStorage, *, force: bool) -> Erased:
    """``fhir``: the engine (repository, registry, library, scoring settings); ``caller``: who asked (for the
    AuditEvent only: the operation has checked their access)."""
    ring = _keyring(fhir)
    rules = AccessPolicy(fhir.registry)
    started = _flush_audit(fhir)

    def work(session: WriteSession) -> tuple[Erased, Renaming]:
        plan = patient_plan(session, fhir.registry, rules, patient_id)
        if not plan.erase:
            raise not_found(f"Patient/{patient_id} is not known here: there is nothing to erase")
        _refuse_pending(session, plan, force)
        renaming = Renaming(ring, plan.erase, patient_id)
        plan.rename |= {k for k, text in plan.query_candidates.items() if renaming.stored(text) != text}
        erased = Erased(renaming.patient_pseudonym or "")
        if cds_rows := cds.remove_feedback(session, plan, fhir.library, fhir.scoring.settings, utc_now().date()):
            erased.rows["cds feedback"] = cds_rows
        _remove(session, plan, renaming, erased)
        _count(erased, "launches", rows.remove_launches(session, patient_id))
        _count(erased, "user accounts", rows.remove_users(session, f"Patient/{patient_id}"))
        for table, found in rows.context_rows(session, patient_id).items():
            named = [key for key, text in found if json_names_patient(text, patient_id)]
            _count(erased, "grants and sign-ins", rows.remove_context_rows(session, table, named))
        session.create(_event(caller, erased, renaming, "Patient"), new_id())
        return erased, renaming

    erased, renaming = fhir.repo.write(work)
    committed = utc_now()
    erased.export_jobs = exports.remove_for_patient(fhir.repo.engine, storage, patient_id, committed)
    erased.renamed += _rename_late_audit(fhir, renaming, started)
    return erased


def expunge_resource(fhir: Any, key: Key, caller: Caller, *, force: bool) -> Erased:
    """One resource: every version, its index rows and conditional keys, and the rows keyed by it (subscription
    events, write-back deliveries, a Task's form links, a response's app sessions); AuditEvents that name it keep a
    pseudonym.  Its patients, who stay, are named in the erasure's AuditEvent."""
    ring = _keyring(fhir)
    rules = AccessPolicy(fhir.registry)
    started = _flush_audit(fhir)

    def work(session: WriteSession) -> tuple[Erased, Renaming]:
        plan = resource_plan(session, fhir.registry, key)
        if not plan.erase:
            raise not_found(f"{key[0]}/{key[1]} is not known")
        _refuse_pending(session, plan, force)
        newest = [content for *_, content in sorted(store.versions_of(session, [key]), reverse=True) if content]
        last = fhirjson.loads_stored(newest[0]) if newest else {}
        patients = [p for p in rules.patients_of(key[0], last) if "/" not in p] if isinstance(last, dict) else []
        renaming = Renaming(ring, plan.erase)
        erased = Erased(renaming.of(f"{key[0]}/{key[1]}"))
        _remove(session, plan, renaming, erased)
        session.create(_event(caller, erased, renaming, key[0], patients), new_id())
        return erased, renaming

    erased, renaming = fhir.repo.write(work)
    erased.renamed += _rename_late_audit(fhir, renaming, started)
    return erased


def _flush_audit(fhir: Any) -> datetime:
    """Store this process's queued audit records now (a read of the patient a moment ago is among them), so the
    erasure renames them; returns when the erasure started."""
    audit = getattr(fhir, "audit", None)  # the caller's engine records audits (auth/guard.py); unguarded, none
    if audit is not None:
        audit.flush()
    return utc_now()


def _refuse_pending(session: WriteSession, plan: Plan, force: bool) -> None:
    responses = plan.ids("QuestionnaireResponse")
    pending = rows.pending_deliveries(session, responses) if responses else 0
    if pending and not force:
        raise FhirError(
            409,
            "conflict",
            f"{pending} write-back deliveries of this data to an EHR are still pending: erase it once they are "
            "delivered (fhir-server outbox list), or post the parameter force=true to drop them",
        )


def _remove(session: WriteSession, plan: Plan, renaming: Renaming, erased: Erased) -> None:
    """The resources and what is keyed by them or by the patient; the renamed records rewritten."""
    responses, tasks = plan.ids("QuestionnaireResponse"), plan.ids("Task")
    _count(erased, "write-back deliveries", rows.remove_deliveries(session, responses))
    _count(erased, "subscription events", rows.remove_events_about(session, plan.erase))
    _count(erased, "subscriptions", rows.remove_subscriptions(session, plan.subscriptions))
    links, messages = rows.remove_links(session, plan.patient, tasks)
    _count(erased, "form links", links)
    _count(erased, "messages", messages)
    _count(erased, "app sessions", rows.remove_app_sessions(session, plan.patient, responses, tasks))
    removed = store.remove(session, plan.erase)
    erased.resources, erased.versions = removed["resources"], removed["versions"]
    erased.index_rows = removed["index rows"]
    _count(erased, "conditional keys", removed["conditional keys"])
    erased.renamed += _rename(session, plan.rename, renaming)


def _rename(session: WriteSession, keys: set[Key], renaming: Renaming) -> int:
    """Rewrite every version of these records with the pseudonyms; the current one re-indexed.  How many changed."""
    changed: set[Key] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), RENAME_BATCH):
        batch = ordered[start : start + RENAME_BATCH]
        versions: dict[int, str] = {}
        for history_id, resource_type, resource_id, content in store.versions_of(session, batch):
            if content and (new := renaming.stored(content)) != content:
                versions[history_id] = new
                changed.add((resource_type, resource_id))
        store.rewrite_versions(session, versions)
        current = {
            key: new
            for key, content in store.existing(session, batch).items()
            if content and (new := renaming.stored(content)) != content
        }
        store.rewrite_current(session, current)
    return len(changed)


def _rename_late_audit(fhir: Any, renaming: Renaming, since: datetime) -> int:
    """A flush interval or so later, the AuditEvents stored since the erasure began that name what was erased (a
    read recorded by another server process just before it): renamed too."""
    time.sleep(LATE_AUDIT_SECONDS)
    _flush_audit(fhir)
    targets = [(t, i) for t, _, i in (reference.partition("/") for reference in renaming.names)]
    params = reference_params(fhir.registry, ["AuditEvent"])

    def work(session: WriteSession) -> int:
        found = {(t, i) for t, i, _, _, _ in store.references_to(session, params, targets)}
        if renaming.patient is not None:
            queries = audit_queries(session, renaming.patient, since)
            found |= {key for key, text in queries.items() if renaming.stored(text) != text}
        return _rename(session, found, renaming)

    return fhir.repo.write(work)


def _count(erased: Erased, what: str, count: int) -> None:
    if count:
        erased.rows[what] = erased.rows.get(what, 0) + count


def _event(
    caller: Caller, erased: Erased, renaming: Renaming, resource_type: str, patients: list[str] | None = None
) -> dict[str, Any]:
    """The erasure's own AuditEvent (DICOM/IHE: rest, delete, with an ``expunge`` subtype): who, when, the outcome
    and an entity naming only the pseudonym, with the counts; never an id, a name or content of what was erased.
    ``patients``: those whose resource was erased, who stay (one resource's erasure)."""
    access = Access("delete", description=f"$expunge of a {resource_type}", patients=patients or [])
    event = build_event(caller, access)
    event["subtype"] = [*event["subtype"], EXPUNGE_SUBTYPE]
    details = [{"type": what, "valueString": str(count)} for what, count in erased.details()]
    details.append({"type": "pseudonym key", "valueString": renaming.key_id})
    # audit-entity-type 1 (person) / object-role 1 (patient) for a patient, 2 (system object) / 4 (domain resource)
    person = resource_type == "Patient"
    role = {"code": "1", "display": "Patient"} if person else {"code": "4", "display": "Domain Resource"}
    entity = {
        "what": {"reference": erased.pseudonym},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1" if person else "2"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", **role},
        "detail": details,
    }
    event["entity"] = [*event.get("entity", []), entity]
    return event

"""Whose sessions a report may count, from who asks (docs/security.md, "Supervisors' reports").

- The server itself, authorization switched off, or a Backend Services client with a ``system/`` read scope on
  MeasureReport (an integrator, like a Bulk Data export): every program.
- A user with a ``user/`` read scope on MeasureReport: only the organisations they supervise, each with every
  program nested in it (``Organization.partOf``, followed down here), recorded by an administrator
  (``fhir-server users add … --supervises Organization/x``, store/tables.py ``supervised_organizations``).  A user
  who supervises nothing gets a 403, not an empty report: an empty report would look like a quiet clinic.
- Anyone else (a patient's token): 403.

A subject narrows further: an Organization must be one of those reachable (403 otherwise, naming no data); a
Practitioner counts the sessions attributed to them or to any of their PractitionerRoles.
"""

from __future__ import annotations

from fhir_server.auth.policy import Policy
from fhir_server.errors import FhirError
from fhir_server.reporting.scope import Scope
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database
from fhir_server.store.organizations import descendants, practitioner_roles


def reachable(policy: Policy, engine: Database) -> frozenset[str] | None:
    """The programs the caller may report on (None: every one)."""
    caller = policy.caller
    if policy.is_server or not caller.authenticated or caller.grant.allows("MeasureReport", "r", "system"):
        return None
    if caller.patient is not None or not caller.grant.allows("MeasureReport", "r", "user"):
        raise FhirError(403, "forbidden", "Reports need a user/ or system/ read scope on MeasureReport")
    organizations = oauth_store.supervised(engine, caller.subject, caller.fhir_user or "") if caller.subject else []
    if not organizations:
        raise FhirError(
            403,
            "forbidden",
            "You do not supervise any organisation: an administrator grants it with "
            "'fhir-server users add ... --supervises Organization/<id>'",
        )
    return descendants(engine, organizations)


def scope_for(policy: Policy, engine: Database, subject: str | None) -> Scope:
    """The scope of one report: the caller's reach, narrowed to ``subject``."""
    allowed = reachable(policy, engine)
    if subject is None:
        return Scope(programs=allowed)
    kind, _, subject_id = subject.partition("/")
    if kind == "Organization":
        if allowed is not None and subject not in allowed:
            raise FhirError(403, "forbidden", f"{subject} is not among the organisations you supervise")
        return Scope(programs=descendants(engine, [subject]))
    if kind == "Practitioner":
        return Scope(programs=allowed, clinicians=frozenset({subject}) | practitioner_roles(engine, subject_id))
    if kind == "PractitionerRole":
        return Scope(programs=allowed, clinicians=frozenset({subject}))
    raise FhirError(400, "not-supported", f"subject must be an Organization, Practitioner or PractitionerRole: {kind}")

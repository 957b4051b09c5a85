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

from typing import Any

from sqlalchemy import and_, select

from fhir_server.auth.policy import Policy
from fhir_server.errors import FhirError
from fhir_server.reporting.units import Scope
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database
from fhir_server.store.tables import idx_reference, resources

MAX_DEPTH = 12  # organisation → clinic → program → team: real hierarchies are a handful of levels deep


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


def descendants(engine: Database, organizations: list[str] | frozenset[str]) -> frozenset[str]:
    """The organisations and every Organization nested in them by ``partOf``, as ``Organization/id``."""
    found = {o for o in organizations if o.startswith("Organization/")}
    frontier = {o.partition("/")[2] for o in found}
    with engine.connect() as connection:
        for _ in range(MAX_DEPTH):
            if not frontier:
                break
            children = _referring(connection, "Organization", "partof", "Organization", frontier)
            frontier = {c for c in children if f"Organization/{c}" not in found}
            found |= {f"Organization/{c}" for c in frontier}
    return frozenset(found)


def practitioner_roles(engine: Database, practitioner_id: str) -> frozenset[str]:
    with engine.connect() as connection:
        roles = _referring(connection, "PractitionerRole", "practitioner", "Practitioner", {practitioner_id})
    return frozenset(f"PractitionerRole/{r}" for r in roles)


def _referring(connection: Any, source: str, param: str, target_type: str, targets: set[str]) -> set[str]:
    """Ids of current ``source`` resources whose ``param`` references one of ``targets``."""
    statement = (
        select(idx_reference.c.resource_id)
        .join(
            resources,
            and_(
                resources.c.resource_type == idx_reference.c.resource_type,
                resources.c.id == idx_reference.c.resource_id,
            ),
        )
        .where(
            idx_reference.c.resource_type == source,
            idx_reference.c.param == param,
            idx_reference.c.target_type == target_type,
            idx_reference.c.target_id.in_(sorted(targets)),
            resources.c.deleted.is_(False),
        )
    )
    return {row[0] for row in connection.execute(statement)}


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

"""Organisations nested by ``Organization.partOf`` and clinicians' PractitionerRoles, read from the search index:
whose sessions a supervisor's report may count (reporting/access.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select

from fhir_server.store.engine import Database
from fhir_server.store.tables import idx_reference, resources

MAX_DEPTH = 12  # organisation → clinic → program → team: real hierarchies are a handful of levels deep


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

"""Access decisions for the resource server: SMART scopes, the launch patient's compartment, v2 query constraints.

Two forms of the same rule, kept side by side so they cannot drift apart:
- ``visible(caller, type, resource)`` decides for one resource in memory (reads, versions, history entries,
  _include'd resources, the old and new content of a write);
- ``confine(caller, query)`` narrows a search in SQL (the page, counts and paging stay right), including the
  inner searches of chains and ``_has``, which could otherwise probe another patient's records.

A patient-context scope (``patient/…``) reaches the resources that are the token's ``patient``'s alone: the
Patient itself, and resources of the R4 Patient compartment's types whose every patient reference (every
compartment parameter of the type) names that patient (``only_patients``; SQL: an exclusive ``CompartmentClause``);
resources of types outside that compartment are not patient data (Questionnaire, Practitioner, …), except the few
that name patients through parameters R4's compartment leaves out (``PATIENT_REFERENCES``: a Task asking a client to
complete a measure), which are confined exactly like the compartment's types.  ``user/`` and
``system/`` scopes are not confined.  A resource the caller may not see is answered exactly like one that does not
exist (docs/security.md), so these functions answer yes/no; auth/policy.py turns them into the server's answers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.auth.caller import Caller
from fhir_server.auth.scopes import ResourceScope
from fhir_server.canonical import CLINICIAN_ONLY, SECURITY_CODESYSTEM
from fhir_server.errors import FhirError
from fhir_server.search.compartments import COMPARTMENTS, compartment_clause
from fhir_server.search.query import (
    AllClause,
    AnyClause,
    ChainClause,
    CompartmentClause,
    HasClause,
    OrClause,
    SearchQuery,
    parse_search,
)
from fhir_server.search.registry import Registry
from fhir_server.search.types import reference, token

ACTIONS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Outside R4's Patient compartment, yet a patient's record: a Binary says whose it is by ``securityContext`` (R4
# binary.html).  A patient token reaches one whose securityContext is its Patient, by id (read, vread, history, a
# write naming it); none without one or naming anything else (a DocumentReference's would need a second lookup).  R4
# gives Binary no search parameter on it, so a patient-context search of Binary cannot be confined and is refused.
SECURITY_CONTEXT_TYPES = frozenset({"Binary"})
# Types outside R4's Patient compartment that are a patient's record all the same, with every search parameter
# through which one names a patient.  R4 leaves Task out of the compartment (its CompartmentDefinition lists no
# Task parameter), yet a Task asking a client to complete a measure names them in ``for`` (subject), ``owner``,
# sometimes ``requester`` and ``focus``: without this table a patient/*.read token would read every client's Tasks.
# A type here is confined like a compartment type: by ``only_patients`` in memory and an exclusive
# CompartmentClause over these parameters in SQL (a Task naming two patients is neither's alone).
PATIENT_REFERENCES: dict[str, tuple[str, ...]] = {"Task": ("subject", "owner", "requester", "focus")}


def forbidden(caller: Caller, resource_type: str, permission: str) -> FhirError:
    return FhirError(
        403,
        "forbidden",
        f"The access token's scopes do not allow {ACTIONS[permission]} on {resource_type}",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )


class AccessPolicy:
    def __init__(self, registry: Registry, *, patients_see_clinician_only: bool = False) -> None:
        """``patients_see_clinician_only``: a site that lets its clients see their therapist's own ratings
        (FHIR_SERVER_CLIENT_SEES_THERAPIST_RATING); by default a patient-context token never reaches a resource
        labelled clinician-only (canonical.py: the therapist's rating, its gap with the client's, that Flag)."""
        self.registry = registry
        self._compartment = {**COMPARTMENTS["Patient"](), **PATIENT_REFERENCES}
        self._hidden = None if patients_see_clinician_only else f"{SECURITY_CODESYSTEM}|{CLINICIAN_ONLY}"

    def is_patient_data(self, resource_type: str) -> bool:
        return (
            resource_type == "Patient"
            or resource_type in SECURITY_CONTEXT_TYPES
            or bool(self._compartment.get(resource_type))
        )

    # -- per interaction ------------------------------------------------------------------------------------
    def scopes(self, caller: Caller, resource_type: str, permission: str) -> list[ResourceScope]:
        """The caller's scopes that allow ``permission`` on the type; patient scopes count only with a patient."""
        return [
            s
            for s in caller.grant.scopes_for(resource_type, permission)
            if s.context != "patient" or caller.patient is not None
        ]

    def require(self, caller: Caller, resource_type: str, permission: str) -> list[ResourceScope]:
        scopes = self.scopes(caller, resource_type, permission)
        if not scopes:
            raise forbidden(caller, resource_type, permission)
        return scopes

    def unrestricted(self, caller: Caller, resource_type: str, permission: str) -> bool:
        """True when some scope allows the interaction on every resource of the type."""
        return any(self._scope_is_open(s, resource_type) for s in self.scopes(caller, resource_type, permission))

    def _scope_is_open(self, scope: ResourceScope, resource_type: str) -> bool:
        return not scope.query and (scope.context != "patient" or not self.is_patient_data(resource_type))

    # -- one resource, in memory -------------------------------------------------------------------------
    def visible(self, caller: Caller, resource_type: str, resource: dict[str, Any], permission: str = "r") -> bool:
        for scope in self.scopes(caller, resource_type, permission):
            if self._scope_is_open(scope, resource_type):
                return True
            confined = scope.context == "patient" and self.is_patient_data(resource_type)
            if confined and not self.only_patients(resource_type, resource, caller.patient or ""):
                continue
            if confined and self._hidden is not None and _labelled(resource, self._hidden):
                continue
            if all(self._matches(resource_type, resource, code, value) for code, value in scope.query):
                return True
        return False

    def only_patients(self, resource_type: str, resource: dict[str, Any], patient_id: str) -> bool:
        """The patient-context rule (docs/security.md): the resource is the patient itself, or names at least one
        patient and every patient it names, through every patient-compartment parameter of its type, is ``patient_id``.

        Being in the patient's compartment is not enough: FHIR puts a resource in A's compartment when *any*
        parameter names A, so a QuestionnaireResponse with author A and subject B is in both; it is neither's
        alone, and a token for A may not read or write it.  A Patient's own ``link`` to another record does not
        make that other record A's."""
        if resource_type == "Patient":
            return resource.get("id") == patient_id
        named = self.patients_of(resource_type, resource)
        return bool(named) and all(p == patient_id for p in named)

    def patients_of(self, resource_type: str, resource: dict[str, Any]) -> list[str]:
        """Every patient the resource names through the compartment's parameters (an absolute URL ending in
        ``Patient/{id}`` is kept whole: another server's patient is never the token's)."""
        found = [resource["id"]] if resource_type == "Patient" and isinstance(resource.get("id"), str) else []
        if resource_type in SECURITY_CONTEXT_TYPES:
            context = resource.get("securityContext")
            named = context.get("reference") if isinstance(context, dict) else None
            kind, _, target = named.rpartition("/") if isinstance(named, str) else ("", "", "")
            # a relative Patient/{id}; any other reference (another type, another server's patient) kept whole
            found += [target] if kind == "Patient" else [named] if isinstance(named, str) else []
        for code in self._compartment.get(resource_type, ()):
            param = self.registry.get(resource_type, code)
            if param is None or param.evaluator is None:
                continue
            for row in reference.index(param.evaluator(resource)):
                if row["target_type"] == "Patient":
                    found.append(row["target_id"])
                elif row["target_type"] is None and "Patient/" in (row["url"] or ""):
                    found.append(row["url"])
        return list(dict.fromkeys(found))

    def _matches(self, resource_type: str, resource: dict[str, Any], code: str, value: str) -> bool:
        """A v2 scope constraint (``category=survey``) on one resource.  Token and reference parameters are
        evaluated here; a constraint on anything else cannot be checked without the database and grants
        nothing in memory (searches still apply it in SQL)."""
        param = self.registry.get(resource_type, code)
        if param is None or param.evaluator is None:
            return False
        values = param.evaluator(resource)
        alternatives = value.split(",")
        if param.type == "token":
            rows = token.index(values)
            return any(_token_matches(row, alt) for alt in alternatives for row in rows)
        if param.type == "reference":
            rows = reference.index(values)
            return any(f"{row['target_type']}/{row['target_id']}" in alternatives for row in rows)
        return False

    # -- searches, in SQL -----------------------------------------------------------------------------------
    def confine(self, caller: Caller, query: SearchQuery, permission: str = "s") -> SearchQuery:
        """The query narrowed to what the caller may see: a 403 when no scope allows the search at all."""
        scopes = self.require(caller, query.resource_type, permission)
        clauses = [self._confine_chains(caller, clause) for clause in query.clauses]
        narrowing = self._narrowing(caller, query.resource_type, scopes)
        if narrowing is not None:
            clauses.append(narrowing)
        return replace(query, clauses=clauses)

    def _narrowing(self, caller: Caller, resource_type: str, scopes: list[ResourceScope]) -> AnyClause | None:
        """None when some scope is open; otherwise the OR over scopes of (compartment AND query constraint)."""
        if any(self._scope_is_open(s, resource_type) for s in scopes):
            return None
        alternatives: list[AnyClause] = []
        for scope in scopes:
            if scope.context == "patient" and resource_type in SECURITY_CONTEXT_TYPES:
                continue  # no SQL confines it (SECURITY_CONTEXT_TYPES): the scope grants no search
            parts: list[AnyClause] = []
            if scope.query:
                try:
                    parts += parse_search(resource_type, list(scope.query), self.registry, strict=True).clauses
                except FhirError:  # a constraint this server cannot evaluate grants nothing
                    continue
            if scope.context == "patient" and self.is_patient_data(resource_type):
                parts.append(self._compartment_clause(resource_type, caller.patient or ""))
                if self._hidden is not None:
                    hidden = [("_security:not", self._hidden)]
                    parts += parse_search(resource_type, hidden, self.registry, strict=True).clauses
            alternatives.append(parts[0] if len(parts) == 1 else AllClause(tuple(parts)))
        if not alternatives:
            raise forbidden(caller, resource_type, "s")
        return alternatives[0] if len(alternatives) == 1 else OrClause(tuple(alternatives))

    def _compartment_clause(self, resource_type: str, patient_id: str) -> AnyClause:
        """``only_patients`` in SQL: the patient itself, or its compartment with no other patient named."""
        if resource_type == "Patient":
            return parse_search("Patient", [("_id", patient_id)], self.registry, strict=True).clauses[0]
        if resource_type in PATIENT_REFERENCES:  # not R4's compartment: the same clause over the table's parameters
            params = tuple(
                p for code in PATIENT_REFERENCES[resource_type] if (p := self.registry.get(resource_type, code))
            )
            return CompartmentClause("Patient", patient_id, params, exclusive=True)
        return replace(compartment_clause(self.registry, "Patient", patient_id, resource_type), exclusive=True)

    def _confine_chains(self, caller: Caller, clause: AnyClause) -> AnyClause:
        """Chains and _has search other types: their inner search is narrowed the same way, and needs a scope."""
        if isinstance(clause, ChainClause):
            inner = self._confine_chains(caller, clause.inner)
            narrowing = self._narrowing(caller, clause.target_type, self.require(caller, clause.target_type, "s"))
            parts = (inner,) if narrowing is None else (inner, narrowing)
            return replace(clause, inner=AllClause(parts))
        if isinstance(clause, HasClause):
            inner = self._confine_chains(caller, clause.inner)
            narrowing = self._narrowing(caller, clause.source_type, self.require(caller, clause.source_type, "s"))
            parts = (inner,) if narrowing is None else (inner, narrowing)
            return replace(clause, inner=AllClause(parts))
        if isinstance(clause, OrClause):
            return OrClause(tuple(self._confine_chains(caller, alt) for alt in clause.alternatives))
        if isinstance(clause, AllClause):
            return AllClause(tuple(self._confine_chains(caller, part) for part in clause.parts))
        return clause


def _labelled(resource: dict[str, Any], label: str) -> bool:
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return any(
        isinstance(each, dict) and f"{each.get('system')}|{each.get('code')}" == label
        for each in (labels if isinstance(labels, list) else [])
    )


def _token_matches(row: dict[str, Any], wanted: str) -> bool:
    system, bar, code = wanted.rpartition("|")
    if not bar:
        return row.get("code") == wanted
    if not code:
        return row.get("system") == system
    return row.get("code") == code and (row.get("system") or "") == system

"""The search each exported type is read with: the search engine's own queries, so an export selects exactly
what a search by the same client would (docs/security.md, "Access").

A type's query is the AND of
- its membership: at system level every resource of the type; at Patient and Group level the Patient compartment
  of each patient the export covers (every Patient the client may search, or the Group's active members), as
  chains through the type's compartment parameters;
- ``_since`` (changed after it) and the type's ``_typeFilter`` queries (ORed);
- the client's access policy (``Policy.confine``: scopes, a patient token's compartment, v2 query constraints),
  which also confines every chain the above contains.
Provenance follows the other types: as associated data (``includeAssociatedData=RelevantProvenanceResources``)
it is the Provenance whose ``target`` is a resource the export holds; at Patient and Group level it is also that
Provenance when Provenance is exported as a type (Bulk Data 2.0: Provenance whose target is in the compartment).
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.policy import Policy
from fhir_server.errors import FhirError
from fhir_server.export.request import ExportRequest
from fhir_server.search.compartments import in_patient_compartments
from fhir_server.search.conditions import DateMatch, TokenMatch
from fhir_server.search.query import AllClause, AnyClause, ChainClause, Clause, OrClause, SearchQuery, parse_search
from fhir_server.search.registry import Registry

_EVERY = AllClause(())


class ExportQueries:
    def __init__(
        self,
        request: ExportRequest,
        policy: Policy,
        registry: Registry,
        members: list[str] | None = None,
        provenance_targets: set[str] | None = None,
    ) -> None:
        """``members``: the Group's patients (Group level); ``provenance_targets``: the types some Provenance
        names as its target (the others need no chain)."""
        self.request, self.policy, self.registry = request, policy, registry
        self.patients: AnyClause = _EVERY
        if request.level == "group":
            self.patients = _ids(registry, members or [])
        self.provenance_targets = provenance_targets or set()

    def query(self, resource_type: str, count: int, cursor: str | None = None) -> SearchQuery:
        """One keyset page of the type's resources, in id order, narrowed by the caller's access policy."""
        query = SearchQuery(resource_type, clauses=self.selection(resource_type), count=count, cursor=cursor)
        return self.policy.confine(query, "r")

    def selection(self, resource_type: str) -> list[AnyClause]:
        """The type's membership, ``_since`` and ``_typeFilter`` (without the access policy, which ``query`` adds
        and which confines the chains in here too)."""
        clauses = [c for c in (self._membership(resource_type), self._since(resource_type)) if c is not None]
        filters = self.request.type_filters.get(resource_type)
        if filters:
            alternatives = [AllClause(tuple(self._parsed(resource_type, params))) for params in filters]
            clauses.append(alternatives[0] if len(alternatives) == 1 else OrClause(tuple(alternatives)))
        return clauses

    def elements(self, resource_type: str) -> list[str]:
        return [*self.request.elements.get("*", ()), *self.request.elements.get(resource_type, ())]

    # -- parts --------------------------------------------------------------------------------------------------
    def _membership(self, resource_type: str) -> AnyClause | None:
        level = self.request.level
        if resource_type == "Provenance" and (self.request.provenance_by_association or level != "system"):
            targets = self._provenance_targets()
            if not self.request.provenance_by_association:  # exported as a type: its own compartment too
                targets.append(in_patient_compartments(self.registry, "Provenance", self.patients))
            return OrClause(tuple(targets)) if targets else _nothing(self.registry)
        if level == "system":
            return None
        return in_patient_compartments(self.registry, resource_type, self.patients)

    def _provenance_targets(self) -> list[AnyClause]:
        """Provenance whose target is a resource of an exported type that this export holds."""
        target = self.registry.get("Provenance", "target")
        assert target is not None
        return [
            ChainClause(target, t, AllClause(tuple(self.selection(t))))
            for t in self.request.types
            if t != "Provenance" and t in self.provenance_targets
        ]

    def _since(self, resource_type: str) -> AnyClause | None:
        since = self.request.since
        param = self.registry.get(resource_type, "_lastUpdated")
        if since is None or param is None:
            return None
        return Clause(param, (DateMatch("gt", since, since),))  # changed strictly after it

    def _parsed(self, resource_type: str, params: list[tuple[str, str]]) -> list[AnyClause]:
        try:
            return parse_search(resource_type, params, self.registry, strict=True).clauses
        except FhirError as exc:  # checked at kick-off; a SearchParameter removed since could break it
            raise FhirError(400, "invalid", f"_typeFilter for {resource_type} no longer parses: {exc}") from None


def _ids(registry: Registry, ids: list[str]) -> AnyClause:
    param = registry.get("Patient", "_id")
    assert param is not None
    if not ids:
        return _nothing(registry)
    return Clause(param, tuple(TokenMatch(None, i) for i in ids))


def _nothing(registry: Registry) -> AnyClause:
    """Matches no resource (an empty Group, or Provenance with nothing exported to point at)."""
    param = registry.get("Patient", "_id")
    assert param is not None
    return Clause(param, ())


def group_members(group: dict[str, Any]) -> list[str]:
    """The ids of a Group's active Patient members (``member.entity``; ``inactive`` members left out)."""
    found = []
    for member in group.get("member") or ():
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        kind, _, member_id = reference.partition("/") if isinstance(reference, str) else ("", "", "")
        if kind == "Patient" and member_id and "/" not in member_id:
            found.append(member_id)
    return list(dict.fromkeys(found))

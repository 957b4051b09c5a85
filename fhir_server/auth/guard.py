"""The FHIR interactions as one access token may use them: the engine under the caller's ``Policy``
(auth/policy.py), plus what access control adds around it: AuditEvents for every access and denial of patient
data, and answers that hide what the caller may not see.

The engine consults the policy itself at every read, search, write and conditional criterion; this layer makes
the answers indistinguishable: a resource outside what the token may see → the same 404 as a resource that does
not exist (also for deleted ones, whose 410 would reveal them); includes and history entries the caller may not
see are dropped; a refused interaction is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fhir_server.auth.access import AccessPolicy, forbidden
from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access, AuditWriter, record_in
from fhir_server.auth.caller import Caller
from fhir_server.auth.policy import Policy
from fhir_server.engine.interactions import Interactions, SearchResult
from fhir_server.errors import FhirError, not_found
from fhir_server.search.query import SearchQuery
from fhir_server.store.records import Stored, WriteResult
from fhir_server.store.repository import WriteSession
from fhir_server.store.search_sql import SearchOutcome

T = TypeVar("T")
HISTORY_SCAN_BATCHES = 50  # a confined caller's history page scans at most this many batches of versions


class GuardedInteractions(Interactions):
    caller: Caller
    audit: AuditWriter
    client_address: str | None
    request_target: str | None  # path?query of the HTTP request, for the audit record of a search

    def __init__(
        self,
        base: Interactions,
        policy: Policy,
        audit: AuditWriter,
        client_address: str | None = None,
        request_target: str | None = None,
    ) -> None:
        """Adopts the shared engine's parts (repository, registry, library, scoring) under ``policy``."""
        vars(self).update(vars(base))  # what base.with_policy(policy) holds, without a copy per request
        self.policy = policy
        self.caller, self.audit = policy.caller, audit
        self.client_address = client_address
        self.request_target = request_target

    @classmethod
    def bind(
        cls,
        base: Interactions,
        caller: Caller,
        rules: AccessPolicy,
        audit: AuditWriter,
        client_address: str | None = None,
        request_target: str | None = None,
    ) -> GuardedInteractions:
        return cls(base, Policy.for_caller(rules, caller), audit, client_address, request_target)

    # -- helpers --------------------------------------------------------------------------------------------
    def _require(self, resource_type: str, permission: str) -> None:
        try:
            self.policy.require(resource_type, permission)
        except FhirError:
            self._record(Access(_INTERACTION[permission], OUTCOME_MINOR_FAILURE, "insufficient scope"), resource_type)
            raise

    def _hidden(self, resource_type: str, resource_id: str, interaction: str) -> FhirError:
        """Answer for a resource the caller may not see: exactly the not-found of a missing one (audited)."""
        self._record(
            Access(
                interaction, OUTCOME_MINOR_FAILURE, "outside the token's access", [f"{resource_type}/{resource_id}"]
            ),
            resource_type,
        )
        return not_found(f"{resource_type}/{resource_id} is not known")

    def _check(self, stored: Stored, permission: str, interaction: str) -> Stored:
        if not self.policy.sees(stored.resource_type, stored.content, permission):
            raise self._hidden(stored.resource_type, stored.id, interaction)
        return stored

    def _check_gone(self, err: FhirError, resource_type: str, resource_id: str, interaction: str) -> None:
        """A 410 for a deleted resource is passed on only when its last content was visible."""
        if err.status != 410 or self.policy.open(resource_type, "r"):
            return
        versions = [s for _, s in super().history(resource_type=resource_type, resource_id=resource_id, count=50)]
        last = next((s for s in versions if s.content), None)
        if last is None or not self.policy.sees(resource_type, last.content, "r"):
            raise self._hidden(resource_type, resource_id, interaction) from None

    def _record(self, access: Access, resource_type: str | None, session: WriteSession | None = None) -> None:
        if access.outcome == "0" and resource_type is not None and not self.policy.is_patient_data(resource_type):
            return  # reading Questionnaires or terminology is not access to patient data
        access.client_address = self.client_address
        if session is not None:
            record_in(session, self.caller, access)
        else:
            self.audit.record(self.caller, access)

    def _denied_write(self, interaction: str, resource_type: str, work: Callable[[], T]) -> T:
        """Runs a write; the engine's refusal of content outside the token's access is audited."""
        try:
            return work()
        except FhirError as err:
            if err.status == 403:
                self._record(
                    Access(interaction, OUTCOME_MINOR_FAILURE, "write outside the token's access"), resource_type
                )
            raise

    def check_operation(self, name: str, reveals: Sequence[str], body: Any) -> None:
        try:
            super().check_operation(name, reveals, body)
        except FhirError:
            self._record(Access("operation", OUTCOME_MINOR_FAILURE, f"${name} outside access"), None)
            raise

    def record_operation(self, name: str, description: str, request_url: str) -> None:
        self._record(Access("operation", description=description, query=request_url), None)

    # -- reads ----------------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> Stored:
        self._require(resource_type, "r")
        try:
            stored = super().read(resource_type, resource_id)
        except FhirError as err:
            self._check_gone(err, resource_type, resource_id, "read")
            raise
        self._check(stored, "r", "read")
        ref = f"{resource_type}/{resource_id}"
        self._record(
            Access("read", resources=[ref], patients=self.policy.patients(resource_type, stored.content)), resource_type
        )
        return stored

    def read_in(self, session: WriteSession, resource_type: str, resource_id: str) -> Stored:
        self._require(resource_type, "r")
        try:
            stored = super().read_in(session, resource_type, resource_id)
        except FhirError as err:
            self._check_gone(err, resource_type, resource_id, "read")
            raise
        return self._check(stored, "r", "read")

    def vread(self, resource_type: str, resource_id: str, version: str, session: WriteSession | None = None) -> Stored:
        self._require(resource_type, "r")
        try:
            stored = super().vread(resource_type, resource_id, version, session)
        except FhirError as err:
            self._check_gone(err, resource_type, resource_id, "vread")
            raise
        self._check(stored, "r", "vread")
        ref = f"{resource_type}/{resource_id}/_history/{version}"
        self._record(
            Access("vread", resources=[ref], patients=self.policy.patients(resource_type, stored.content)),
            resource_type,
        )
        return stored

    def require_known(self, resource_type: str, resource_id: str) -> None:
        self._require(resource_type, "r")
        super().require_known(resource_type, resource_id)
        stored = self.repo.read(resource_type, resource_id)
        if stored is not None and stored.deleted:
            self._check_gone(FhirError(410, "deleted", ""), resource_type, resource_id, "history-instance")
        elif stored is not None:
            self._check(stored, "r", "history-instance")

    def parse_query(self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False) -> SearchQuery:
        query = super().parse_query(resource_type, params, strict=strict)
        query.cursor = self.policy.unseal(query.cursor)
        return query

    def search(self, query: SearchQuery) -> SearchResult:
        return self._searched(query, lambda q: super(GuardedInteractions, self).search(q))

    def search_in(self, session: WriteSession, query: SearchQuery) -> SearchResult:
        return self._searched(query, lambda q: super(GuardedInteractions, self).search_in(session, q))

    def _searched(self, query: SearchQuery, run: Callable[[SearchQuery], SearchResult]) -> SearchResult:
        try:
            confined = self.policy.confine(query, "s")
        except FhirError:
            self._record(Access("search-type", OUTCOME_MINOR_FAILURE, "insufficient scope"), query.resource_type)
            raise
        result = run(confined)
        outcome: SearchOutcome = result.outcome
        outcome.included = [s for s in outcome.included if self._include_visible(s)]
        outcome.next_cursor = self.policy.seal(outcome.next_cursor)
        outcome.prev_cursor = self.policy.seal(outcome.prev_cursor)
        patients = [self.caller.patient] if self.caller.patient else []
        self._record(
            Access("search-type", patients=patients, query=self.request_target or query.resource_type),
            query.resource_type,
        )
        return SearchResult(query, outcome)

    def _include_visible(self, stored: Stored) -> bool:
        return any(
            self.policy.allows(stored.resource_type, p) and self.policy.sees(stored.resource_type, stored.content, p)
            for p in "rs"
        )

    def history(self, **criteria: Any) -> Sequence[tuple[int, Stored]]:
        resource_type = criteria.get("resource_type")
        if resource_type and not criteria.get("resource_id"):
            self._require(resource_type, "s")
        wanted = criteria.get("count", 20)
        kept: list[tuple[int, Stored]] = []
        before = criteria.get("before_history_id")
        for _ in range(HISTORY_SCAN_BATCHES):
            rows = super().history(**{**criteria, "before_history_id": before, "count": max(wanted, 100)})
            for history_id, stored in rows:
                if self._history_visible(stored):
                    kept.append((history_id, stored))
            if len(kept) >= wanted or len(rows) < max(wanted, 100):
                break
            before = rows[-1][0]
        kept = kept[:wanted]
        interaction = (
            "history-instance" if criteria.get("resource_id") else "history-type" if resource_type else "history-system"
        )
        patients = [self.caller.patient] if self.caller.patient else []
        self._record(Access(interaction, patients=patients), resource_type or "Patient")
        return kept

    def _history_visible(self, stored: Stored) -> bool:
        if not self.policy.allows(stored.resource_type, "r"):
            return False
        if stored.content is None:  # a deletion shows nothing but that it happened
            return self.policy.open(stored.resource_type, "r")
        return self.policy.sees(stored.resource_type, stored.content, "r")

    # -- writes ---------------------------------------------------------------------------------------------
    def _existing(self, session: WriteSession, resource_type: str, resource_id: str, permission: str) -> Stored | None:
        """The current version when it exists and is visible; a hidden one answers 404."""
        old = session.current(resource_type, resource_id)
        if old is None or old.deleted:
            return None
        if not self.policy.sees(resource_type, old.content, permission):
            raise self._hidden(resource_type, resource_id, _INTERACTION[permission])
        return old

    def _written(
        self, session: WriteSession, interaction: str, resource_type: str, stored: Stored, content: Any
    ) -> None:
        access = Access(
            interaction,
            resources=[f"{resource_type}/{stored.id}"],
            patients=self.policy.patients(resource_type, content),
        )
        self._record(access, resource_type, session)

    def create(self, session: WriteSession, resource_type: str, resource: Any, **options: Any) -> WriteResult:
        self._require(resource_type, "c")
        result = self._denied_write(
            "create",
            resource_type,
            lambda: super(GuardedInteractions, self).create(session, resource_type, resource, **options),
        )
        if not result.existing:
            self._written(session, "create", resource_type, result.stored, resource)
        return result

    def update(
        self, session: WriteSession, resource_type: str, resource_id: str, resource: Any, *, if_match: str | None
    ) -> WriteResult:
        self._require(resource_type, "u")
        if self._existing(session, resource_type, resource_id, "u") is None:
            self._require(resource_type, "c")
        result = self._denied_write(
            "update",
            resource_type,
            lambda: super(GuardedInteractions, self).update(
                session, resource_type, resource_id, resource, if_match=if_match
            ),
        )
        self._written(session, "update", resource_type, result.stored, resource)
        return result

    def conditional_update(
        self, session: WriteSession, resource_type: str, criteria: str, resource: Any, *, if_match: str | None
    ) -> WriteResult:
        self._require(resource_type, "u")
        result = self._denied_write(
            "update",
            resource_type,
            lambda: super(GuardedInteractions, self).conditional_update(
                session, resource_type, criteria, resource, if_match=if_match
            ),
        )
        self._written(session, "update", resource_type, result.stored, resource)
        return result

    def patch(
        self, session: WriteSession, resource_type: str, resource_id: str, operations: Any, *, if_match: str | None
    ) -> WriteResult:
        self._require(resource_type, "u")
        self._existing(session, resource_type, resource_id, "u")
        result = self._denied_write(
            "patch",
            resource_type,
            lambda: super(GuardedInteractions, self).patch(
                session, resource_type, resource_id, operations, if_match=if_match
            ),
        )
        self._written(session, "patch", resource_type, result.stored, result.stored.content)
        return result

    def delete(self, session: WriteSession, resource_type: str, resource_id: str) -> Stored | None:
        self._require(resource_type, "d")
        try:
            old = self._existing(session, resource_type, resource_id, "d")
        except FhirError:
            return None  # a hidden resource is "already absent", exactly like a missing one (denial audited)
        deleted = super().delete(session, resource_type, resource_id)
        if deleted is not None and old is not None:
            self._written(session, "delete", resource_type, deleted, old.content)
        return deleted

    def conditional_delete(self, session: WriteSession, resource_type: str, criteria: str) -> Stored | None:
        self._require(resource_type, "d")
        matches = self._matches(session, resource_type, criteria, "conditional delete", "d")
        if not matches:
            return None
        deleted = super().delete(session, resource_type, matches[0].id)
        if deleted is not None:
            self._written(session, "delete", resource_type, deleted, matches[0].content)
        return deleted


_INTERACTION = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search-type"}


__all__ = ["GuardedInteractions", "forbidden"]

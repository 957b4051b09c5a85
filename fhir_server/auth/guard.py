"""The FHIR interactions as one access token may use them: every path a request can take (REST, each entry of a
batch or transaction, operations) goes through these overrides, so the checks exist once.

``GuardedInteractions.bind`` makes a per-request view of the shared ``Interactions`` (a shallow copy of its
attributes plus the caller); the scoring pipeline keeps the unguarded original, so the Observations and Flags it
derives from a response the caller was allowed to submit are written by the server itself.

Rules (SECURITY.md, auth/access.py): no scope for the interaction → 403; a resource outside what the token may
see → the same 404 as a resource that does not exist (also for deleted ones, whose 410 would reveal them);
conditional criteria, chains, _has and includes only ever see visible resources; a write must leave the
resource visible (no moving an Observation to another patient); paging links carry the token's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fhir_server import fhirjson
from fhir_server.api.interactions import Interactions, SearchResult
from fhir_server.auth.access import AccessPolicy, forbidden
from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access, AuditWriter, record_in
from fhir_server.auth.caller import Caller
from fhir_server.errors import FhirError, not_found
from fhir_server.search.query import SearchQuery
from fhir_server.store.records import Stored, WriteResult
from fhir_server.store.repository import WriteSession
from fhir_server.store.search_sql import SearchOutcome

T = TypeVar("T")
HISTORY_SCAN_BATCHES = 50  # a confined caller's history page scans at most this many batches of versions


class GuardedInteractions(Interactions):
    caller: Caller
    policy: AccessPolicy
    audit: AuditWriter
    client_address: str | None
    request_target: str | None  # path?query of the HTTP request, for the audit record of a search

    @classmethod
    def bind(
        cls,
        base: Interactions,
        caller: Caller,
        policy: AccessPolicy,
        audit: AuditWriter,
        client_address: str | None = None,
        request_target: str | None = None,
    ) -> GuardedInteractions:
        guarded = cls.__new__(cls)
        guarded.__dict__.update(base.__dict__)
        guarded.caller, guarded.policy, guarded.audit = caller, policy, audit
        guarded.client_address = client_address
        guarded.request_target = request_target
        guarded._permission = "r"  # the interaction whose conditional criteria are being matched
        return guarded

    # -- helpers --------------------------------------------------------------------------------------------
    def _require(self, resource_type: str, permission: str) -> None:
        try:
            self.policy.require(self.caller, resource_type, permission)
        except FhirError:
            self._record(Access(_INTERACTION[permission], OUTCOME_MINOR_FAILURE, "insufficient scope"), resource_type)
            raise

    def _visible(self, resource_type: str, content: str | dict[str, Any] | None, permission: str) -> bool:
        if self.policy.unrestricted(self.caller, resource_type, permission):
            return True
        resource = fhirjson.loads_stored(content or "{}") if isinstance(content, str | None) else content
        return self.policy.visible(self.caller, resource_type, resource, permission)

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
        if not self._visible(stored.resource_type, stored.content, permission):
            raise self._hidden(stored.resource_type, stored.id, interaction)
        return stored

    def _check_gone(self, err: FhirError, resource_type: str, resource_id: str, interaction: str) -> None:
        """A 410 for a deleted resource is passed on only when its last content was visible."""
        if err.status != 410 or self.policy.unrestricted(self.caller, resource_type, "r"):
            return
        versions = [s for _, s in super().history(resource_type=resource_type, resource_id=resource_id, count=50)]
        last = next((s for s in versions if s.content), None)
        if last is None or not self._visible(resource_type, last.content, "r"):
            raise self._hidden(resource_type, resource_id, interaction) from None

    def _patients(self, resource_type: str, content: str | dict[str, Any] | None) -> list[str]:
        if self.caller.patient:
            return [self.caller.patient]
        resource = fhirjson.loads_stored(content or "{}") if isinstance(content, str | None) else content
        return self.policy.patients_of(resource_type, resource)

    def _record(self, access: Access, resource_type: str | None, session: WriteSession | None = None) -> None:
        if access.outcome == "0" and resource_type is not None and not self.policy.is_patient_data(resource_type):
            return  # reading Questionnaires or terminology is not access to patient data
        access.client_address = self.client_address
        if session is not None:
            record_in(session, self.caller, access)
        else:
            self.audit.record(self.caller, access)

    def _writing(self, permission: str, work: Callable[[], T]) -> T:
        previous, self._permission = self._permission, permission
        try:
            return work()
        finally:
            self._permission = previous

    # -- access hooks ---------------------------------------------------------------------------------------
    def can(self, resource_type: str, permission: str) -> bool:
        return bool(self.policy.scopes(self.caller, resource_type, permission))

    def seal_cursor(self, cursor: str | None) -> str | None:
        fingerprint = self.caller.fingerprint
        return f"{fingerprint}~{cursor}" if cursor and fingerprint else cursor

    def unseal_cursor(self, cursor: str | None) -> str | None:
        fingerprint = self.caller.fingerprint
        if not cursor or not fingerprint:
            return cursor
        owner, sep, inner = cursor.partition("~")
        if not sep or owner != fingerprint:
            raise FhirError(403, "forbidden", "This paging link was made for another access token; search again")
        return inner

    def _conditional_query(self, query: SearchQuery) -> SearchQuery:
        return self.policy.confine(self.caller, query, self._permission)

    def _prepare_write(self, session: WriteSession, resource_type: str, resource: Any) -> dict[str, Any] | None:
        if isinstance(resource, dict) and not self._visible(resource_type, resource, self._permission):
            self._record(
                Access(_INTERACTION[self._permission], OUTCOME_MINOR_FAILURE, "write outside the token's access"),
                resource_type,
            )
            raise FhirError(
                403,
                "forbidden",
                f"The token may not write this {resource_type}: it would be outside the launch patient's "
                "compartment or the token's scope",
            )
        return super()._prepare_write(session, resource_type, resource)

    def authorize_operation(self, name: str, reveals: Sequence[str], body: Any) -> None:
        """An operation's result shows ``reveals`` types; a posted resource must be one the caller could write."""
        for resource_type in reveals:
            self._require(resource_type, "r")
        for resource in _posted_resources(body):
            resource_type = resource.get("resourceType")
            if not isinstance(resource_type, str) or not self.policy.is_patient_data(resource_type):
                continue
            if not any(self._visible(resource_type, resource, p) for p in "rc"):
                self._record(Access("operation", OUTCOME_MINOR_FAILURE, f"${name} outside access"), resource_type)
                raise FhirError(403, "forbidden", f"${name}: the posted {resource_type} is outside the token's access")

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
            Access("read", resources=[ref], patients=self._patients(resource_type, stored.content)), resource_type
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
            Access("vread", resources=[ref], patients=self._patients(resource_type, stored.content)), resource_type
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
        query.cursor = self.unseal_cursor(query.cursor)
        return query

    def search(self, query: SearchQuery) -> SearchResult:
        return self._searched(query, lambda q: super(GuardedInteractions, self).search(q))

    def search_in(self, session: WriteSession, query: SearchQuery) -> SearchResult:
        return self._searched(query, lambda q: super(GuardedInteractions, self).search_in(session, q))

    def _searched(self, query: SearchQuery, run: Callable[[SearchQuery], SearchResult]) -> SearchResult:
        try:
            confined = self.policy.confine(self.caller, query, "s")
        except FhirError:
            self._record(Access("search-type", OUTCOME_MINOR_FAILURE, "insufficient scope"), query.resource_type)
            raise
        result = run(confined)
        outcome: SearchOutcome = result.outcome
        outcome.included = [s for s in outcome.included if self._include_visible(s)]
        outcome.next_cursor = self.seal_cursor(outcome.next_cursor)
        outcome.prev_cursor = self.seal_cursor(outcome.prev_cursor)
        patients = [self.caller.patient] if self.caller.patient else []
        self._record(
            Access("search-type", patients=patients, query=self.request_target or query.resource_type),
            query.resource_type,
        )
        return SearchResult(query, outcome)

    def _include_visible(self, stored: Stored) -> bool:
        return any(
            self.policy.scopes(self.caller, stored.resource_type, p)
            and self._visible(stored.resource_type, stored.content, p)
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
        if not self.policy.scopes(self.caller, stored.resource_type, "r"):
            return False
        if stored.content is None:  # a deletion shows nothing but that it happened
            return self.policy.unrestricted(self.caller, stored.resource_type, "r")
        return self._visible(stored.resource_type, stored.content, "r")

    # -- writes ---------------------------------------------------------------------------------------------
    def _existing(self, session: WriteSession, resource_type: str, resource_id: str, permission: str) -> Stored | None:
        """The current version when it exists and is visible; a hidden one answers 404."""
        old = session.current(resource_type, resource_id)
        if old is None or old.deleted:
            return None
        if not self._visible(resource_type, old.content, permission):
            raise self._hidden(resource_type, resource_id, _INTERACTION[permission])
        return old

    def _written(
        self, session: WriteSession, interaction: str, resource_type: str, stored: Stored, content: Any
    ) -> None:
        access = Access(
            interaction, resources=[f"{resource_type}/{stored.id}"], patients=self._patients(resource_type, content)
        )
        self._record(access, resource_type, session)

    def create(self, session: WriteSession, resource_type: str, resource: Any, **options: Any) -> WriteResult:
        self._require(resource_type, "c")
        result = self._writing(
            "c", lambda: super(GuardedInteractions, self).create(session, resource_type, resource, **options)
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
        result = self._writing(
            "u",
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
        result = self._writing(
            "u",
            lambda: super(GuardedInteractions, self).conditional_update(
                session, resource_type, criteria, resource, if_match=if_match
            ),
        )
        if result.created:
            self._require(resource_type, "c")
        self._written(session, "update", resource_type, result.stored, resource)
        return result

    def patch(
        self, session: WriteSession, resource_type: str, resource_id: str, operations: Any, *, if_match: str | None
    ) -> WriteResult:
        self._require(resource_type, "u")
        self._existing(session, resource_type, resource_id, "u")
        result = self._writing(
            "u",
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
        matches = self._writing("d", lambda: self._matches(session, resource_type, criteria, "conditional delete"))
        if not matches:
            return None
        deleted = super().delete(session, resource_type, matches[0].id)
        if deleted is not None:
            self._written(session, "delete", resource_type, deleted, matches[0].content)
        return deleted

    def single_match(self, session: WriteSession, resource_type: str, criteria: str, what: str) -> Stored:
        permission = "u" if what == "conditional patch" else "r"
        return self._writing(
            permission, lambda: super(GuardedInteractions, self).single_match(session, resource_type, criteria, what)
        )


_INTERACTION = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search-type"}


def _posted_resources(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") != "Parameters":
        return [body]
    return [
        p["resource"] for p in body.get("parameter", []) if isinstance(p, dict) and isinstance(p.get("resource"), dict)
    ]


__all__ = ["GuardedInteractions", "forbidden"]

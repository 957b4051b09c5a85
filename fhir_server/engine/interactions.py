"""The FHIR RESTful interactions, independent of HTTP, shared by the REST handlers and batch/transaction.

Writes take a ``WriteSession`` so that a transaction Bundle runs many of them in one database transaction; what a
submitted resource must pass before it is written, and what it sets off after, is in admission.py.
Every interaction consults ``self.policy`` (auth/policy.py) explicitly: the app's shared engine runs under
``Policy.server()``; a request gets a view of it under its caller's policy (``with_policy``; auth/guard.py adds
the audit records and the answers that hide what a caller may not see).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fhir_server import fhirjson, models
from fhir_server.auth.policy import Policy
from fhir_server.config import Settings
from fhir_server.engine import admission, stored_definitions
from fhir_server.engine.conditional import identifier_criteria, normalise_criteria, parse_etag, same_submission
from fhir_server.engine.questionnaires import resolve_questionnaire
from fhir_server.errors import FhirError, gone, not_found, precondition_failed
from fhir_server.ids import new_id
from fhir_server.jsonpatch import apply_patch
from fhir_server.library import Library
from fhir_server.scoring.history import ScoringRead
from fhir_server.scoring.pipeline import ScoringPipeline
from fhir_server.search.compartments import compartment_clause
from fhir_server.search.custom import CustomParameters
from fhir_server.search.query import SearchQuery, parse_search
from fhir_server.search.registry import Registry
from fhir_server.store.records import Stored, WriteResult
from fhir_server.store.repository import Repository, WriteSession
from fhir_server.store.search_sql import SearchOutcome
from fhir_server.subscriptions.events import EventQueue, LiveTypes
from fhir_server.validation import check_id


@dataclass
class SearchResult:
    query: SearchQuery
    outcome: SearchOutcome


def require_type(resource_type: str) -> str:
    if not models.is_resource_type(resource_type):
        raise FhirError(404, "not-supported", f"Resource type '{resource_type[:64]}' is not supported")
    return resource_type


class Interactions:
    def __init__(
        self,
        repo: Repository,
        registry: Registry,
        settings: Settings,
        library: Library | None = None,
        *,
        policy: Policy,
    ) -> None:
        self.repo = repo
        self.registry = registry
        self.settings = settings
        self.library = library or Library()
        self.policy = policy
        self.custom = CustomParameters(repo, registry)
        # The Observations and Flags the pipeline derives from a response the caller was allowed to submit are
        # written by the server itself, in the response's write session.
        self.scoring = ScoringPipeline(self.library, settings.scoring_overrides)
        # Built once per engine and shared by its policy views (with_policy, auth/guard.py): the validator looks up
        # StructureDefinitions as the server, whoever the caller.
        self.validation = admission.validation_services(settings, self.structure_definition)
        # Topic-based subscriptions: the events a write sets off are queued in its transaction (admission.written).
        self.subscriptions = EventQueue(registry, LiveTypes(repo.read_engine), settings.client_sees_therapist_rating)
        # Work a write sets off in its own transaction beyond scoring and subscriptions (a Task asking for a form
        # link gets its link and messages: outreach/links.py); each hook sees the stored version, may write through
        # the session, and refuses the write by raising a FhirError.  Shared by every policy view.
        self.write_hooks: list[Callable[[WriteSession, Stored], None]] = []

    def _view(self) -> Interactions:
        """A shallow copy (``copy.copy`` without its generic protocol: a view is made per request)."""
        view = object.__new__(type(self))
        vars(view).update(vars(self))
        return view

    def with_policy(self, policy: Policy) -> Interactions:
        """The same engine (repository, registry, library, scoring) consulting another caller's policy."""
        view = self._view()
        view.policy = policy
        return view

    def for_reader(self, reader: str) -> Interactions:
        """The same engine as one caller (deps.py): its reads may go to a read replica (store/replica.py)."""
        repo = self.repo.for_reader(reader)
        if repo is self.repo:  # no replica
            return self
        view = self._view()
        view.repo = repo
        return view

    def without_terminology(self) -> Interactions:
        """The same engine validating without the terminology server (the library's own content: checked by its
        tests, and a server start must not wait on, or fail with, another server)."""
        view = self._view()
        view.validation = admission.without_terminology(self.validation)
        return view

    def check_response(self, session: WriteSession | None, response: dict[str, Any]) -> dict[str, Any] | None:
        """Validate a QuestionnaireResponse against its Questionnaire (422 naming the item); returns the
        Questionnaire, or None when the server does not hold it (the response is stored unchecked and unscored)."""
        return admission.check_response(self, session, response)

    def structure_definition(self, canonical: str) -> dict[str, Any] | None:
        """A stored StructureDefinition by canonical URL (for the validator: extension definitions, profiles)."""
        return stored_definitions.structure_definition(self, canonical)

    def resolve_questionnaire(self, session: WriteSession | None, canonical: Any) -> dict[str, Any]:
        """``url|version`` → that version; ``url`` → the library's preferred version, else the newest stored."""
        return resolve_questionnaire(self, session, canonical)

    # -- reads ------------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> Stored:
        require_type(resource_type)
        check_id(resource_id)
        stored = self.repo.read(resource_type, resource_id)
        if stored is None:
            raise not_found(f"{resource_type}/{resource_id} is not known")
        if stored.deleted:
            raise FhirError(
                410,
                "deleted",
                f"{resource_type}/{resource_id} was deleted",
                headers={"ETag": stored.etag, "Last-Modified": stored.http_date},
            )
        return stored

    def require_known(self, resource_type: str, resource_id: str) -> None:
        """History exists for deleted resources too; only a never-seen id is a 404."""
        require_type(resource_type)
        check_id(resource_id)
        if self.repo.read(resource_type, resource_id) is None:
            raise not_found(f"{resource_type}/{resource_id} is not known")

    def vread(self, resource_type: str, resource_id: str, version: str, session: WriteSession | None = None) -> Stored:
        require_type(resource_type)
        check_id(resource_id)
        if not version.isdigit() or len(version) > 9:
            raise not_found(f"Version '{version[:20]}' of {resource_type}/{resource_id} is not known")
        if session is not None:  # inside a transaction: see its own writes
            stored = session.version(resource_type, resource_id, int(version))
        else:
            stored = self.repo.vread(resource_type, resource_id, int(version))
        if stored is None:
            raise not_found(f"Version {version} of {resource_type}/{resource_id} is not known")
        if stored.deleted:
            raise gone(f"Version {version} of {resource_type}/{resource_id} is a deletion")
        return stored

    def parse_query(self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False) -> SearchQuery:
        self.custom.refresh_if_stale()
        return parse_search(
            require_type(resource_type),
            params,
            self.registry,
            default_count=self.settings.default_page_size,
            max_count=self.settings.max_page_size,
            strict=strict,
        )

    def compartment_query(
        self, owner_type: str, owner_id: str, member_type: str, params: list[tuple[str, str]], *, strict: bool
    ) -> SearchQuery:
        require_type(owner_type)
        check_id(owner_id)
        query = self.parse_query(member_type, params, strict=strict)
        query.clauses.append(compartment_clause(self.registry, owner_type, owner_id, member_type))
        return query

    def search(self, query: SearchQuery) -> SearchResult:
        return SearchResult(query, self.repo.search(query))

    def search_in(self, session: WriteSession, query: SearchQuery) -> SearchResult:
        """A search inside a write transaction (a transaction's GET entries see its own writes)."""
        return SearchResult(query, session.search(query))

    def history(self, **criteria: Any) -> Sequence[tuple[int, Stored]]:
        """Versions newest first, as (history_id, version); see Repository.history."""
        return self.repo.history(**criteria)

    def record_operation(self, name: str, description: str, request_url: str) -> None:
        """An operation's run, for the audit trail.  The server acting for itself is not audited; the caller's
        engine (auth/guard.py) records it."""

    def check_operation(self, name: str, reveals: Sequence[str], body: Any) -> None:
        """Before an operation runs: may the caller see the types its result reveals, and post this body?"""
        self.policy.check_operation(name, reveals, body)

    # -- writes -----------------------------------------------------------------------------------------
    def create(
        self,
        session: WriteSession,
        resource_type: str,
        resource: Any,
        *,
        if_none_exist: str | None = None,
        resource_id: str | None = None,
    ) -> WriteResult:
        require_type(resource_type)
        self.policy.require(resource_type, "c")
        admitted = admission.admit(self, session, resource_type, resource, "c")
        if if_none_exist is None and resource_type == "QuestionnaireResponse":
            replay = identifier_criteria(resource)
            if replay:
                return self._create_once(session, resource, replay, admitted, resource_id)
        if if_none_exist:
            existing = self._matches(session, resource_type, if_none_exist, "If-None-Exist", "r")
            if existing:
                return WriteResult(existing[0], created=False, existing=True)
        # The server assigns the id on create; any id in the body is ignored, as the specification says.
        result = session.create({**resource}, resource_id or new_id())
        if if_none_exist:
            self._claim(session, resource_type, if_none_exist, result.stored.id, self.policy)
        return admission.written(self, session, admitted, result)

    def _create_once(
        self,
        session: WriteSession,
        resource: dict[str, Any],
        replay: str,
        admitted: admission.Admitted,
        resource_id: str | None,
    ) -> WriteResult:
        """A QuestionnaireResponse carrying an identifier: a replayed submission (same identifier, subject and
        questionnaire) is stored and scored once, and its replay answers with the stored one.  The identifier is
        looked up over every patient's responses (the server's check, not the caller's search), so the same
        identifier on another patient's or another measure's response is a 409 that shows nothing of it; a create
        never answers with a different patient's resource, and nothing is silently dropped."""
        server = self.policy.server()
        # What scoring will read goes with the replay check (one round trip, nothing written is read by it).
        ahead = self.scoring.scoring_read(resource) if admitted.questionnaire is not None else None
        existing = self._matches(session, "QuestionnaireResponse", replay, "replay", "r", server, scoring_read=ahead)
        if existing:
            stored = existing[0]
            if same_submission(stored.content, resource) and self.policy.sees("QuestionnaireResponse", stored.content):
                return WriteResult(stored, created=False, existing=True)
            raise FhirError(
                409,
                "duplicate",
                "Another QuestionnaireResponse already carries this identifier; a submission is identified by its "
                "identifier together with its subject and questionnaire",
                expression=["QuestionnaireResponse.identifier"],
            )
        result = session.create({**resource}, resource_id or new_id())
        self._claim(session, "QuestionnaireResponse", replay, result.stored.id, server)
        return admission.written(self, session, admitted, result)

    def _claim(
        self, session: WriteSession, resource_type: str, criteria: str, resource_id: str, policy: Policy
    ) -> None:
        """Claim the criteria for the resource just created, so a concurrent twin cannot also create.  A confined
        caller's claim is scoped to its compartment, and only its own resources can hold it."""

        def still_matches(other_id: str) -> bool:
            params = [*parse_qsl(criteria.lstrip("?"), keep_blank_values=True), ("_id", other_id)]
            query = policy.confine(self.parse_query(resource_type, params, strict=True), "r")
            return bool(session.search(query).matches)

        key = policy.claim_scope + normalise_criteria(criteria)
        session.claim_conditional_key(resource_type, key, resource_id, still_matches)

    def update(
        self,
        session: WriteSession,
        resource_type: str,
        resource_id: str,
        resource: Any,
        *,
        if_match: str | None,
    ) -> WriteResult:
        require_type(resource_type)
        check_id(resource_id)
        admitted = admission.admit(self, session, resource_type, resource, "u")
        admission.require_url_id(resource, resource_id)
        result = session.update(
            resource, resource_id, if_match=parse_etag(if_match), skip_unchanged=admitted.questionnaire is not None
        )
        return admission.written(self, session, admitted, result)

    def conditional_update(
        self, session: WriteSession, resource_type: str, criteria: str, resource: Any, *, if_match: str | None
    ) -> WriteResult:
        require_type(resource_type)
        self.policy.require(resource_type, "u")
        admitted = admission.admit(self, session, resource_type, resource, "u")
        matches = self._matches(session, resource_type, criteria, "conditional update", "u")
        body_id = resource.get("id")
        if not matches:
            self.policy.require(resource_type, "c")
            target = body_id or new_id()
            check_id(target)
            result = session.update({**resource, "id": target}, target, if_match=parse_etag(if_match))
            self._claim(session, resource_type, criteria, target, self.policy)
            return admission.written(self, session, admitted, result)
        if body_id is not None and body_id != matches[0].id:
            raise FhirError(400, "invalid", f"The body's id '{body_id}' is not the id of the matching resource")
        result = session.update(
            {**resource, "id": matches[0].id},
            matches[0].id,
            if_match=parse_etag(if_match),
            skip_unchanged=admitted.questionnaire is not None,
        )
        return admission.written(self, session, admitted, result)

    def patch(
        self,
        session: WriteSession,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: str | None,
    ) -> WriteResult:
        require_type(resource_type)
        check_id(resource_id)
        current = session.current(resource_type, resource_id, lock=True)
        if current is None:
            raise not_found(f"{resource_type}/{resource_id} is not known")
        if current.deleted:
            raise gone(f"{resource_type}/{resource_id} was deleted")
        expected = parse_etag(if_match)
        if expected is not None and expected != current.version_id:
            raise precondition_failed(
                f"Version conflict: If-Match is {expected} but the current version is {current.version_id}"
            )
        patched = apply_patch(fhirjson.loads_stored(current.content or "{}"), operations)
        admission.require_same_identity(patched, resource_type, resource_id)
        admitted = admission.admit(self, session, resource_type, patched, "u")
        result = session.update(patched, resource_id, if_match=current.version_id, method="PATCH")
        return admission.written(self, session, admitted, result)

    def delete(self, session: WriteSession, resource_type: str, resource_id: str) -> Stored | None:
        require_type(resource_type)
        check_id(resource_id)
        if resource_type == "SearchParameter":
            self.custom.mark_changed()
        return session.delete(resource_type, resource_id)

    def conditional_delete(self, session: WriteSession, resource_type: str, criteria: str) -> Stored | None:
        require_type(resource_type)
        matches = self._matches(session, resource_type, criteria, "conditional delete", "d")
        return session.delete(resource_type, matches[0].id) if matches else None

    def read_in(self, session: WriteSession, resource_type: str, resource_id: str) -> Stored:
        """Read inside a write transaction (a transaction's GET entries see its own writes)."""
        require_type(resource_type)
        check_id(resource_id)
        stored = session.current(resource_type, resource_id)
        if stored is None:
            raise not_found(f"{resource_type}/{resource_id} is not known")
        if stored.deleted:
            raise gone(f"{resource_type}/{resource_id} was deleted")
        return stored

    def single_match_or_none(
        self, session: WriteSession, resource_type: str, criteria: str, what: str
    ) -> Stored | None:
        """A conditional update's or conditional reference's one match among what the caller may see."""
        matches = self._matches(session, resource_type, criteria, what, "u" if what == "conditional update" else "r")
        return matches[0] if matches else None

    def single_match(self, session: WriteSession, resource_type: str, criteria: str, what: str) -> Stored:
        matches = self._matches(session, resource_type, criteria, what, "u" if what == "conditional patch" else "r")
        if not matches:
            raise not_found(f"No {resource_type} matches the {what} criteria")
        return matches[0]

    def _matches(
        self,
        session: WriteSession,
        resource_type: str,
        criteria: str,
        what: str,
        permission: str,
        policy: Policy | None = None,
        *,
        scoring_read: ScoringRead | None = None,
    ) -> list[Stored]:
        """The resources conditional criteria match, among those ``policy`` (the caller's by default) lets the
        caller use ``permission`` on: another patient's resources are never matched, nor revealed by a 412."""
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not params:
            raise FhirError(400, "invalid", f"The {what} criteria are empty")
        query = self.parse_query(resource_type, params, strict=True)
        query.count = 2
        query = (policy or self.policy).confine(query, permission)
        token = query.single_token_match()
        if token is not None:  # "identifier=system|value", the usual criteria: a prebuilt statement
            matches = session.find_by_token(resource_type, *token, limit=2, scoring_read=scoring_read)
        else:
            matches = session.search(query).matches
        if len(matches) > 1:
            raise precondition_failed(f"The {what} criteria match more than one resource", "multiple-matches")
        return matches

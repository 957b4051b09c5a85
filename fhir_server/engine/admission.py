"""A submitted resource's way into the store, the same for every write (create, update, conditional update, patch,
and so a transaction's entries).  Before the write: the caller's policy, the types the server takes in at all
(``NOT_ACCEPTED``: 422), the R4 validator (its warnings kept for the client's answer), the policy again on the
validated content, and the content of the few types the server acts on.  After it, in the same transaction: what
the admitted content sets off (a QuestionnaireResponse scored against the Questionnaire found while checking it, a
SearchParameter searched by, a Subscription registered for delivery, subscribers' events queued).

A module of its own so that interactions.py says only what each REST interaction does, and what the checks find
reaches the write's aftermath in one place (``Admitted``).  The operations that check without writing ($validate,
$extract) reach the checks through ``Interactions.validation`` and ``Interactions.check_response``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.auth.policy import Policy
from fhir_server.config import Settings
from fhir_server.ehr.registry import by_issuer
from fhir_server.engine.questionnaires import UnknownQuestionnaire, resolve_questionnaire
from fhir_server.errors import FhirError
from fhir_server.scoring.resources import label_clinician_only
from fhir_server.search.custom import check_definition
from fhir_server.store.records import WriteResult
from fhir_server.store.repository import WriteSession
from fhir_server.subscriptions.checks import Settings as SubscriptionSettings
from fhir_server.subscriptions.checks import read_settings
from fhir_server.subscriptions.events import register as register_subscription
from fhir_server.validation.extensions import Lookup
from fhir_server.validation.families import parse_warn_only
from fhir_server.validation.questionnaire_response import validate_response
from fhir_server.validation.resource import Services, check
from fhir_server.validation.sdc_task import Lookups, applies, task_issues
from fhir_server.validation.terminology import RemoteTerminology

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions


def validation_services(settings: Settings, lookup: Lookup) -> Services:
    """What the validator consults beyond the R4 tables: stored StructureDefinitions (``lookup``), this site's rule
    families taken as warnings (validation/families.py), the terminology server."""
    terminology = RemoteTerminology(settings.terminology_url) if settings.terminology_url else None
    return Services(lookup, parse_warn_only(settings.validation_warn_only), terminology)


def without_terminology(services: Services) -> Services:
    return dataclasses.replace(services, terminology=None)


# Types this server does not take in, and why; the CapabilityStatement leaves them out (api/capability.py).  Storing
# one would answer 201 and then do nothing the specification expects of it.
NOT_ACCEPTED = {
    "Parameters": "Parameters carries an operation's input and output; R4 gives it no RESTful endpoint and it is "
    "not stored",
}


@dataclass(frozen=True, slots=True)
class Admitted:
    """A write's new content that passed every check, with what the checks found that the write's answer and
    aftermath need."""

    resource_type: str
    warnings: tuple[dict[str, Any], ...]  # the validator's, as OperationOutcome issues
    questionnaire: dict[str, Any] | None  # the one a QuestionnaireResponse answers, for its scoring
    subscription: SubscriptionSettings | None = None  # a Subscription's delivery settings, registered with it


def admit(fhir: Interactions, session: WriteSession, resource_type: str, resource: Any, permission: str) -> Admitted:
    """Every check a write's new content must pass, in order; raises the FhirError of the first that fails."""
    _policy_first(fhir.policy, resource_type, resource, permission)
    if resource_type in NOT_ACCEPTED:
        raise FhirError(422, "not-supported", NOT_ACCEPTED[resource_type])
    warnings = _validate(fhir.validation, resource, resource_type)
    questionnaire = _content_checks(fhir, session, resource_type, resource, permission)
    if resource_type == "Subscription":
        interaction = "create" if permission == "c" else "update"
        local = fhir.settings.subscription_local_endpoints
        allowed = fhir.settings.subscription_endpoints
        settings = read_settings(resource, fhir.registry, interaction, local_endpoints=local, allowed_endpoints=allowed)
        return Admitted(resource_type, warnings, None, settings)
    return Admitted(resource_type, warnings, questionnaire)


def _policy_first(policy: Policy, resource_type: str, resource: Any, permission: str) -> None:
    """A write naming another patient is refused as such, whatever else is wrong with it."""
    if policy.is_server:
        return
    try:
        policy.check_write(resource_type, resource, permission)
    except FhirError:
        raise
    except Exception:  # content too malformed to evaluate: validation names the fault, then we check again
        return


def _validate(services: Services, resource: Any, resource_type: str) -> tuple[dict[str, Any], ...]:
    """The R4 validator (400 with every issue on an error); the warnings it gives, for the client's answer."""
    report = check(resource, resource_type, services)
    if report.errors:
        raise FhirError(400, report.errors[0].code, report.errors[0].diagnostics, issues=report.issues)
    return tuple(issue.to_json() for issue in report.issues if issue.severity == "warning")


def _content_checks(
    fhir: Interactions, session: WriteSession, resource_type: str, resource: Any, permission: str
) -> dict[str, Any] | None:
    """Checks that go beyond structure: the caller's policy on the (validated) new content, and the content of the
    few types the server acts on.  Returns the Questionnaire a QuestionnaireResponse answers."""
    fhir.policy.check_write(resource_type, resource, permission)
    fhir.custom.refresh_if_stale()
    if resource_type == "SearchParameter" and isinstance(resource, dict):
        check_definition(resource)
    elif resource_type == "QuestionnaireResponse":
        return check_response(fhir, session, resource)
    elif resource_type == "Task" and applies(resource):
        check_task(fhir, session, resource)
    return None


def check_task(fhir: Interactions, session: WriteSession | None, task: dict[str, Any]) -> None:
    """A Task asking for a measure follows SDC's questionnaire-task pattern (validation/sdc_task.py): 422 naming
    the element, the Questionnaire and a write-back EHR looked up as the server.  Such a Task is the clinic's
    request (its delivery input makes the server send a link to an address): the client or a relative may read
    theirs but not write one (403), as Epic offers patient-facing apps Task reads only."""
    if not fhir.policy.writes_for_the_clinic:
        raise FhirError(
            403,
            "forbidden",
            "A Task asking a client to complete a measure is written by the clinic (a clinician or a system), "
            "not by the client or a relative",
        )

    def questionnaire(canonical: str) -> str | None:
        try:
            resolve_questionnaire(fhir, session, canonical, task)
        except FhirError as refused:
            return refused.issues[0].diagnostics
        return None

    lookups = Lookups(questionnaire, lambda url: by_issuer(fhir.repo.engine, url) is not None)
    issues = task_issues(task, lookups)
    if issues:
        raise FhirError(422, issues[0].code, issues[0].diagnostics, issues=issues)


def check_response(fhir: Interactions, session: WriteSession | None, response: dict[str, Any]) -> dict[str, Any] | None:
    """Validate a QuestionnaireResponse against its Questionnaire (422 naming the item); returns the Questionnaire,
    or None when the server does not hold it (the response is stored unchecked and unscored)."""
    try:
        questionnaire = resolve_questionnaire(fhir, session, response.get("questionnaire"), response)
    except UnknownQuestionnaire:
        return None
    # With the measure's scoring rules: a scored response also needs a subject and must be scorable, refused here
    # because scoring runs after the response is written.
    rules = fhir.scoring.rules_for(response)
    issues = validate_response(response, questionnaire, rules)
    if issues:
        raise FhirError(422, issues[0].code, issues[0].diagnostics, issues=issues)
    if rules is not None and rules.rater == "clinician":  # the therapist's own impression (auth/access.py)
        label_clinician_only(response)
    return questionnaire


def require_url_id(resource: dict[str, Any], resource_id: str) -> None:
    """An update's body names the resource its URL names."""
    if resource.get("id") is None:
        raise FhirError(400, "required", "The resource in an update must have an id", expression=["id"])
    if resource["id"] != resource_id:
        raise FhirError(
            400,
            "invalid",
            f"The body's id '{resource['id']}' does not match the URL's id '{resource_id}'",
        )


def require_same_identity(patched: dict[str, Any], resource_type: str, resource_id: str) -> None:
    if patched.get("id") != resource_id or patched.get("resourceType") != resource_type:
        raise FhirError(400, "invalid", "A patch may not change the resource's type or id")


def written(fhir: Interactions, session: WriteSession, admitted: Admitted, result: WriteResult) -> WriteResult:
    """After the write, in the same transaction: a Subscription is registered for delivery; the written resource
    and what its scoring wrote become subscribers' events (subscriptions/events.py); a new or changed
    QuestionnaireResponse is scored; a new or changed
    SearchParameter makes this process look for its commit on every request (not for an unchanged one: the library
    loads its SearchParameters on every start, and checking on every request costs a query each).  The validator's
    warnings go to the client's answer (the OperationOutcome of ``Prefer: return=OperationOutcome``); they never
    refuse a write."""
    if result.existing:
        return result
    if admitted.resource_type == "SearchParameter":
        fhir.custom.mark_changed()
    if admitted.subscription is not None:
        register_subscription(session, result.stored, admitted.subscription, fhir.policy.caller)
        fhir.subscriptions.live.changed()
        fhir.subscriptions.woken_after(session)  # its handshake
    stored = [result.stored]
    if admitted.questionnaire is not None:
        fresh = result.created and result.stored.version_id == 1
        scored = fhir.scoring.on_written(
            session, result.stored, admitted.questionnaire, fresh=fresh, trusted=fhir.policy.writes_for_the_clinic
        )
        stored += scored.written
        if scored.notes:
            result = dataclasses.replace(result, notes=scored.notes)
    for hook in fhir.write_hooks:  # e.g. a Task's form link (Interactions.write_hooks)
        hook(session, result.stored)
    fhir.subscriptions.on_written(session, stored)  # subscribers' events, queued with the write
    return dataclasses.replace(result, warnings=admitted.warnings) if admitted.warnings else result

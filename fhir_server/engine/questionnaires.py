"""Which Questionnaire a QuestionnaireResponse answers: one contained in the response (``#id``), the library's own
artifacts (immutable per version, no database look-up), else the stored Questionnaires of that canonical URL.

A canonical URL the server holds in no version at all is ``UnknownQuestionnaire``: the response is valid FHIR and
is stored without being checked or scored (HL7's validator and HAPI FHIR accept it with a warning).  A URL the
server holds but in another version is refused: that is the typo that would leave a measure's answers unscored."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fhir_server import fhirjson
from fhir_server.canonical import version_key
from fhir_server.errors import FhirError
from fhir_server.store.repository import WriteSession
from fhir_server.validation import definitions
from fhir_server.validation.bindings import value_set

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions


class UnknownQuestionnaire(FhirError):
    """The response names no Questionnaire, or one this server holds in no version."""

    def __init__(self, diagnostics: str) -> None:
        super().__init__(422, "not-found", diagnostics, expression=[WHERE])


WHERE = "QuestionnaireResponse.questionnaire"
SPEC_CANONICAL = re.compile(r"http://hl7\.org/fhir/([A-Z][A-Za-z]+)/")


def resolve_questionnaire(
    fhir: Interactions, session: WriteSession | None, canonical: Any, response: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``#id`` → the response's contained Questionnaire; ``url|version`` → that version; ``url`` → the library's
    preferred version, else the newest stored."""
    if not isinstance(canonical, str) or not canonical:
        raise UnknownQuestionnaire("The response names no Questionnaire: its answers cannot be checked")
    if canonical.startswith("#"):
        return _contained(canonical, response or {})
    url, _, version = canonical.partition("|")
    version = version or fhir.library.preferred_version(url) or ""
    shipped = fhir.library.questionnaire(url, version)
    if shipped is not None:
        return shipped
    params = [("url", url)] + ([("version", version)] if version else [])
    query = fhir.parse_query("Questionnaire", params)
    query.count = 50
    found = (session.search(query) if session is not None else fhir.repo.search(query)).matches
    if not found:
        if version and _known_url(fhir, session, url):
            raise FhirError(
                422,
                "not-found",
                f"Questionnaire {canonical[:200]}: this server holds {url[:200]} in other versions only",
                expression=[WHERE],
            )
        other = _other_kind(url)
        if other is not None:
            raise FhirError(422, "invalid", f"{canonical[:200]} is a {other}, not a Questionnaire", expression=[WHERE])
        raise UnknownQuestionnaire(f"Questionnaire {canonical[:200]} is not known to this server")
    candidates = [fhirjson.loads_stored(s.content or "{}") for s in found]
    return max(candidates, key=lambda q: version_key(q.get("version", "")))


def _known_url(fhir: Interactions, session: WriteSession | None, url: str) -> bool:
    if fhir.library.preferred_version(url):
        return True
    query = fhir.parse_query("Questionnaire", [("url", url)])
    query.count = 1
    return bool((session.search(query) if session is not None else fhir.repo.search(query)).matches)


def _contained(canonical: str, response: dict[str, Any]) -> dict[str, Any]:
    for resource in response.get("contained") or ():
        if isinstance(resource, dict) and (resource.get("resourceType"), resource.get("id")) == (
            "Questionnaire",
            canonical[1:],
        ):
            return resource
    raise FhirError(
        422, "not-found", f"{canonical[:80]} names no Questionnaire contained in this response", expression=[WHERE]
    )


def _other_kind(url: str) -> str | None:
    """The type of resource ``url`` names when it is not a Questionnaire: the specification's canonical URLs say
    their type (http://hl7.org/fhir/ValueSet/...), and a value set the server expands is one too."""
    if value_set(url) is not None:
        return "ValueSet"
    match = SPEC_CANONICAL.match(url)
    if match is not None and match.group(1) != "Questionnaire" and definitions.is_resource(match.group(1)):
        return match.group(1)
    return None

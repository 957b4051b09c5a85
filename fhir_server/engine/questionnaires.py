"""Which Questionnaire a QuestionnaireResponse answers: the library's own artifacts first (immutable per version, no
database look-up), else the stored Questionnaires of that canonical URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server import fhirjson
from fhir_server.engine.conditional import version_key
from fhir_server.errors import FhirError
from fhir_server.store.repository import WriteSession

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions


def resolve_questionnaire(fhir: Interactions, session: WriteSession | None, canonical: Any) -> dict[str, Any]:
    """``url|version`` → that version; ``url`` → the library's preferred version, else the newest stored."""
    if not isinstance(canonical, str) or not canonical:
        raise FhirError(
            422,
            "required",
            "QuestionnaireResponse.questionnaire is required to check the answers",
            expression=["QuestionnaireResponse.questionnaire"],
        )
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
        raise FhirError(
            422,
            "not-found",
            f"Questionnaire {canonical[:200]} is not known to this server",
            expression=["QuestionnaireResponse.questionnaire"],
        )
    candidates = [fhirjson.loads_stored(s.content or "{}") for s in found]
    return max(candidates, key=lambda q: version_key(q.get("version", "")))

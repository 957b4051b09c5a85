"""What conditional interactions compare: search criteria (a response's replay criteria, the normalised key a
conditional create claims), If-Match ETags and canonical versions."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from fhir_server import fhirjson
from fhir_server.errors import precondition_failed


def identifier_criteria(resource: dict[str, Any]) -> str | None:
    """A QuestionnaireResponse's own identifier as If-None-Exist criteria: a replayed submission matches it."""
    identifier = resource.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        system, value = _escape(identifier["system"]), _escape(identifier["value"])
        return urlencode({"identifier": f"{system}|{value}"})
    return None


def same_submission(stored_content: str | None, resource: dict[str, Any]) -> bool:
    """Whether a stored QuestionnaireResponse is the same submission as ``resource``: a replay carries the same
    identifier, subject and questionnaire; the same identifier on anything else is not a replay."""
    stored = fhirjson.loads_stored(stored_content or "{}")
    return _reference(stored.get("subject")) == _reference(resource.get("subject")) and stored.get(
        "questionnaire"
    ) == resource.get("questionnaire")


def _reference(value: Any) -> Any:
    return value.get("reference") if isinstance(value, dict) else value


def _escape(text: str) -> str:
    """A search value's reserved characters escaped (R4 §3.1.1.4.8), so an identifier with '|' or ',' in it
    still matches only itself."""
    return "".join("\\" + ch if ch in "\\|,$" else ch for ch in str(text))


def parse_etag(value: str | None) -> int | None:
    """``W/"3"`` or ``"3"`` → 3.  A malformed If-Match can never match, so it is a 412 like a stale one."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 9:
        raise precondition_failed(f"If-Match '{value[:40]}' is not a version of this resource")
    return int(text)


def normalise_criteria(criteria: str) -> str:
    """The same criteria in any parameter order give the same claim key."""
    return "&".join(sorted(f"{k}={v}" for k, v in parse_qsl(criteria.lstrip("?"), keep_blank_values=True)))

"""Conformance resources the validator looks up on the server: a StructureDefinition by canonical URL (an
extension's definition or a profile, stored by a POST or by ``fhir-server load`` of an implementation guide)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server import fhirjson
from fhir_server.canonical import version_key

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions


def structure_definition(fhir: Interactions, canonical: str) -> dict[str, Any] | None:
    """``url`` → the newest stored version; ``url|version`` → that version; None when the server holds none."""
    url, _, version = canonical.partition("|")
    params = [("url", url)] + ([("version", version)] if version else [])
    query = fhir.parse_query("StructureDefinition", params)
    query.count = 20
    found = fhir.repo.search(query).matches
    if not found:
        return None
    candidates = [fhirjson.loads_stored(s.content or "{}") for s in found]
    return max(candidates, key=lambda sd: version_key(sd.get("version", "")))

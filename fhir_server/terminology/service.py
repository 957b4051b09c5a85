"""$lookup, $validate-code and $expand over locally stored, complete CodeSystems.

Systems the server does not hold (SNOMED CT, LOINC) are not looked up here: asking answers 404 ``not-found`` so a
client knows to ask a terminology server instead of getting a wrong "invalid".
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

from fhir_server import fhirjson
from fhir_server.engine.interactions import Interactions
from fhir_server.errors import FhirError
from fhir_server.store.records import instant, utc_now

MAX_EXPANSION = 1000


def _concepts(concepts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for concept in concepts or ():
        yield concept
        yield from _concepts(concept.get("concept") or [])


class Terminology:
    def __init__(self, fhir: Interactions) -> None:
        self.fhir = fhir

    def _find(self, resource_type: str, url: str, version: str | None = None) -> dict[str, Any]:
        params = [("url", url)] + ([("version", version)] if version else [])
        query = self.fhir.parse_query(resource_type, params)
        found = self.fhir.search(query).outcome.matches
        if not found:
            label = f"{url}|{version}" if version else url
            raise FhirError(404, "not-found", f"{resource_type} {label[:200]} is not known to this server")
        return fhirjson.loads_stored(found[-1].content or "{}")

    def code_system(self, url: str, version: str | None = None) -> dict[str, Any]:
        system = self._find("CodeSystem", url, version)
        if system.get("content") not in ("complete", "fragment"):
            raise FhirError(404, "not-found", f"CodeSystem {url} has no concepts on this server")
        return system

    def value_set(self, url: str, version: str | None = None) -> dict[str, Any]:
        return self._find("ValueSet", url, version)

    def concept(self, system: dict[str, Any], code: str) -> dict[str, Any] | None:
        return next((c for c in _concepts(system.get("concept") or []) if c.get("code") == code), None)

    # -- $lookup -------------------------------------------------------------------------------------------
    def lookup(self, system_url: str, code: str, version: str | None = None) -> dict[str, Any]:
        system = self.code_system(system_url, version)
        concept = self.concept(system, code)
        if concept is None:
            raise FhirError(404, "not-found", f"Code '{code[:64]}' is not in {system_url}")
        parameters: list[dict[str, Any]] = [
            {"name": "name", "valueString": system.get("name") or system.get("title") or system_url},
            {"name": "version", "valueString": system.get("version", "")},
            {"name": "display", "valueString": concept.get("display", code)},
        ]
        if concept.get("definition"):
            parameters.append({"name": "definition", "valueString": concept["definition"]})
        for designation in concept.get("designation") or ():
            parts = [{"name": "value", "valueString": designation.get("value", "")}]
            if designation.get("language"):
                parts.insert(0, {"name": "language", "valueCode": designation["language"]})
            parameters.append({"name": "designation", "part": parts})
        return {"resourceType": "Parameters", "parameter": parameters}

    # -- $expand -------------------------------------------------------------------------------------------
    def expansion_contains(self, value_set: dict[str, Any]) -> list[dict[str, Any]]:
        compose = value_set.get("compose") or {}
        excluded = {(c["system"], c["code"]) for c in self._included(compose.get("exclude") or [])}
        return [c for c in self._included(compose.get("include") or []) if (c["system"], c["code"]) not in excluded]

    def _included(self, includes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for include in includes:
            for nested in include.get("valueSet") or ():
                out += self.expansion_contains(self.value_set(nested))
            url = include.get("system")
            if not url:
                continue
            if include.get("filter"):
                raise FhirError(400, "not-supported", f"ValueSet filters on {url} cannot be expanded here")
            system = self.code_system(url, include.get("version"))
            listed = include.get("concept")
            if listed:
                for item in listed:
                    found = self.concept(system, item.get("code", ""))
                    display = item.get("display") or (found or {}).get("display", item.get("code"))
                    out.append({"system": url, "code": item.get("code"), "display": display})
            else:
                out += [
                    {"system": url, "code": c["code"], "display": c.get("display", c["code"])}
                    for c in _concepts(system.get("concept") or [])
                    if not _abstract(c)
                ]
        return out

    def expand(
        self, value_set: dict[str, Any], *, text_filter: str | None, count: int | None, offset: int
    ) -> dict[str, Any]:
        contains = self.expansion_contains(value_set)
        if text_filter:
            needle = text_filter.casefold()
            contains = [c for c in contains if needle in c["display"].casefold() or needle in c["code"].casefold()]
        total = len(contains)
        page = contains[offset : offset + min(count if count is not None else MAX_EXPANSION, MAX_EXPANSION)]
        expanded = {k: v for k, v in value_set.items() if k not in ("compose", "meta", "text")}
        expanded["expansion"] = {
            "identifier": f"urn:uuid:{_stable_id(value_set, text_filter, offset, count)}",
            "timestamp": _now(),
            "total": total,
            "offset": offset,
            "parameter": [{"name": "offset", "valueInteger": offset}]
            + ([{"name": "count", "valueInteger": count}] if count is not None else [])
            + ([{"name": "filter", "valueString": text_filter}] if text_filter else []),
        }
        if page:
            expanded["expansion"]["contains"] = page
        return expanded

    # -- $validate-code ------------------------------------------------------------------------------------
    def validate_in_system(self, system_url: str, code: str, display: str | None) -> dict[str, Any]:
        concept = self.concept(self.code_system(system_url), code)
        if concept is None:
            return _result(False, f"Code '{code}' is not in {system_url}")
        return _display_result(concept.get("display", code), display)

    def validate_in_value_set(self, value_set: dict[str, Any], system: str | None, code: str, display: str | None):
        for member in self.expansion_contains(value_set):
            if member["code"] == code and (system is None or member["system"] == system):
                return _display_result(member["display"], display)
        where = f"{system}|{code}" if system else code
        return _result(False, f"'{where}' is not in the value set {value_set.get('url', '')}")


def _abstract(concept: dict[str, Any]) -> bool:
    return any(
        p.get("code") in ("notSelectable", "abstract") and p.get("valueBoolean") for p in concept.get("property") or ()
    )


def _result(ok: bool, message: str | None = None, display: str | None = None) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "result", "valueBoolean": ok}]
    if message:
        parameters.append({"name": "message", "valueString": message})
    if display:
        parameters.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": parameters}


def _display_result(correct: str, given: str | None) -> dict[str, Any]:
    if given is not None and given.casefold() != correct.casefold():
        return _result(False, f"The display for this code is '{correct}', not '{given}'", correct)
    return _result(True, None, correct)


def _stable_id(*parts: Any) -> str:
    return str(uuid.UUID(hashlib.md5(repr(parts).encode(), usedforsecurity=False).hexdigest()))


def _now() -> str:
    return instant(utc_now())

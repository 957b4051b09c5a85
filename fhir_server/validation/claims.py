"""Profiles a resource is validated against: those it claims (``meta.profile``, on every resource of it: contained
ones and Bundle entries too) and the one ``$validate?profile=`` asks for.

A profile is found among HL7's core profiles (vital signs...; ``core_profiles.py``) or the StructureDefinitions
stored on the server (``lookup``).  A profile asked for by ``$validate`` that the server does not hold is an error
(``not-supported``): a validation the server did not do never reads as passed.  One a resource merely claims is a
warning, as in HL7's validator: the claim is the sender's, the base rules still hold.

R4 also says which profile an Observation must meet without claiming it: a vital sign (its code is the LOINC code
of a core vital signs profile, or the SNOMED CT concept for the same measurement: ``data/vital_signs.json``)
SHALL conform to that profile (R4 observation.html#vitals).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server.errors import Issue
from fhir_server.validation.bindings import value_set
from fhir_server.validation.core_profiles import core_profile
from fhir_server.validation.extensions import Lookup
from fhir_server.validation.profiles import profile_issues

CORE = "http://hl7.org/fhir/StructureDefinition/"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def claimed_profile_issues(
    resources: list[tuple[dict[str, Any], str]], lookup: Lookup | None, requested: str | None = None
) -> list[Issue]:
    issues: list[Issue] = []
    for index, (node, where) in enumerate(resources):
        meta = node.get("meta")
        claimed = meta.get("profile") if type(meta) is dict and type(meta.get("profile")) is list else []
        urls = [url for url in claimed if type(url) is str]
        urls += [url for url in _implied(node) if url not in urls]
        if index == 0 and requested:
            urls = [requested, *(url for url in urls if url != requested)]
        for url in urls:
            issues += _against(node, where, url, lookup, asked=index == 0 and url == requested)
    return issues


def _against(node: dict[str, Any], where: str, url: str, lookup: Lookup | None, *, asked: bool) -> list[Issue]:
    profile = _resolve(url, lookup)
    if profile is None:
        if asked:
            return [
                Issue(
                    "not-supported",
                    f"Profile {url[:200]} is not known to this server: nothing was validated "
                    "against it (load its package with fhir-server load, or POST the StructureDefinition)",
                )
            ]
        message = f"{where}.meta.profile: profile {url[:200]} is not known to this server, so it was not checked"
        return [Issue("not-found", message, severity="warning", expression=[f"{where}.meta.profile"])]
    if profile.get("resourceType") != "StructureDefinition" or profile.get("type") != node.get("resourceType"):
        return [
            Issue(
                "invalid",
                f"{where}: {url[:200]} is a profile of {profile.get('type')}, not of {node.get('resourceType')}",
                expression=[where],
            )
        ]
    return profile_issues(node, profile, lambda u: _resolve(u, lookup), _expand)


@cache
def _vital_sign_codes() -> dict[tuple[str, str], str]:
    """(system, code) → the core vital signs profile an Observation with that code must meet."""
    raw = orjson.loads(resources.files("fhir_server.validation").joinpath("data/vital_signs.json").read_bytes())
    out: dict[tuple[str, str], str] = {}
    for name, snomed in raw.items():
        if name.startswith("_"):
            continue
        url = CORE + name
        for element in (core_profile(url) or {}).get("snapshot", {}).get("element", ()):
            if element.get("path") == "Observation.code.coding.code" and element.get("fixedCode"):
                out[(LOINC, element["fixedCode"])] = url
        out.update({(SNOMED, code): url for code in snomed})
    return out


def _implied(node: dict[str, Any]) -> list[str]:
    if node.get("resourceType") != "Observation" or type(node.get("code")) is not dict:
        return []
    codings = node["code"].get("coding")
    table = _vital_sign_codes()
    found = [table.get((c.get("system"), c.get("code"))) for c in codings or () if type(c) is dict]
    return list(dict.fromkeys(url for url in found if url))


def _resolve(url: str, lookup: Lookup | None) -> dict[str, Any] | None:
    found = core_profile(url)
    if found is None and lookup is not None:
        found = lookup(url)
    return found


def _expand(url: str) -> set[tuple[str, str]] | None:
    found = value_set(url.split("|")[0])
    return set(found.pairs) if found is not None else None

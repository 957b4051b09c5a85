"""SMART on FHIR scopes, v1 (``patient/Observation.read``) and v2 (``patient/Observation.rs?category=survey``).

A malformed scope grants nothing (docs/security.md): it is kept aside, never widened into something it did not say.
v1 ``read`` means v2 ``rs``, ``write`` means ``cud``, and ``*`` means ``cruds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from fhir_server import models

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"  # create, read, update, delete, search, in the order SMART v2 writes them
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<access>[a-z*]+)(?:\?(?P<query>.+))?"
)
LAUNCH_SCOPES = {
    "launch",
    "launch/patient",
    "launch/encounter",
    "openid",
    "fhirUser",
    "profile",
    "offline_access",
    "online_access",
}
# This server's own scopes, outside SMART's grammar: each grants one function of the server and is given only to a
# Backend Services client registered for it by name (auth/scope_policy.py), never to an app acting for a user.
EXPUNGE_SCOPE = "fhir-server/expunge"  # erasure (operations/expunge.py), with a system/ scope to delete
SERVER_SCOPES = frozenset({EXPUNGE_SCOPE})


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a resource type or "*"
    permissions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...] = ()  # v2 constraint: only resources matching these search parameters

    def covers(self, context: str | None, resource_type: str, permission: str) -> bool:
        return (
            permission in self.permissions
            and self.resource_type in ("*", resource_type)
            and (context is None or self.context == context)
        )


@dataclass(frozen=True)
class Grant:
    """What a token's scope string allows."""

    resource_scopes: tuple[ResourceScope, ...] = ()
    other: frozenset[str] = frozenset()  # launch, openid, fhirUser, offline_access, ...
    rejected: tuple[str, ...] = ()  # malformed scopes, which grant nothing
    # scopes_for's answers: a cached token's Grant is asked the same few questions on every request.
    _answers: dict[tuple[str, str, str | None], tuple[ResourceScope, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def scopes_for(self, resource_type: str, permission: str, context: str | None = None) -> list[ResourceScope]:
        """The scopes that allow ``permission`` (one of c r u d s) on ``resource_type``."""
        key = (resource_type, permission, context)
        found = self._answers.get(key)
        if found is None:
            found = tuple(s for s in self.resource_scopes if s.covers(context, resource_type, permission))
            if len(self._answers) < 1024:  # bounded: the types and permissions a token asks about
                self._answers[key] = found
        return list(found)

    def allows(self, resource_type: str, permission: str, context: str | None = None) -> bool:
        """True when some scope allows it without a query constraint (constrained scopes need the resource)."""
        return any(not s.query for s in self.scopes_for(resource_type, permission, context))

    @property
    def contexts(self) -> set[str]:
        return {s.context for s in self.resource_scopes}


def parse_scope(text: str) -> ResourceScope | None:
    """One resource scope, or None when it is not a well-formed v1 or v2 resource scope."""
    match = _SCOPE.fullmatch(text)
    if match is None:
        return None
    resource_type, access, query = match["type"], match["access"], match["query"]
    if resource_type != "*" and not models.is_resource_type(resource_type):
        return None
    if access in _V1:
        if query:  # v1 scopes take no query
            return None
        letters = _V1[access]
    else:
        letters = access
        # v2: a non-empty subsequence of c r u d s, in that order, without repeats
        if not letters or letters != "".join(ch for ch in PERMISSIONS if ch in letters):
            return None
    constraint: tuple[tuple[str, str], ...] = ()
    if query:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        if not pairs or any(not k or not v for k, v in pairs):
            return None
        constraint = tuple(pairs)
    return ResourceScope(match["context"], resource_type, frozenset(letters), constraint)


def parse_scopes(scope_string: str) -> Grant:
    resource_scopes, other, rejected = [], set(), []
    for token in scope_string.split():
        if token in LAUNCH_SCOPES or token in SERVER_SCOPES or token.startswith("launch/"):
            other.add(token)
            continue
        parsed = parse_scope(token)
        if parsed is None:
            rejected.append(token)
        else:
            resource_scopes.append(parsed)
    return Grant(tuple(resource_scopes), frozenset(other), tuple(rejected))

"""Which of the requested scopes a token gets: the requested scopes ∩ what the client is registered for, then
narrowed by the launch (no patient/ scope without a patient in context, no system/ scope for a user's app).

Malformed scopes are dropped (docs/security.md: they grant nothing).  A requested scope is within a registered one when
the registered scope covers it: same context, the same resource type or ``*``, at least the same permissions
(v1 and v2 spellings compare by their c r u d s letters), and no query constraint or the very same one.  The
granted string keeps the client's own spelling of each scope.
"""

from __future__ import annotations

from fhir_server.auth.scopes import LAUNCH_SCOPES, SERVER_SCOPES, ResourceScope, parse_scope

# Scopes granted by name, the client being registered for each: those about the launch and identity rather than
# data, and this server's own (SERVER_SCOPES: Backend Services only, see for_user_app and for_backend).
IDENTITY_SCOPES = frozenset(LAUNCH_SCOPES) | SERVER_SCOPES
REFRESH_SCOPES = frozenset({"offline_access", "online_access"})


def _covers(registered: ResourceScope, wanted: ResourceScope) -> bool:
    return (
        registered.context == wanted.context
        and registered.resource_type in ("*", wanted.resource_type)
        and wanted.permissions <= registered.permissions
        and (not registered.query or registered.query == wanted.query)
    )


def within_client(requested: str, registered: str) -> list[str]:
    """The requested scopes the client may be granted, in request order, without duplicates."""
    allowed_names = set(registered.split())
    allowed = [s for s in (parse_scope(t) for t in registered.split()) if s is not None]
    granted: list[str] = []
    for token in dict.fromkeys(requested.split()):
        if token in IDENTITY_SCOPES:
            if token in allowed_names:
                granted.append(token)
            continue
        wanted = parse_scope(token)
        if wanted is not None and any(_covers(a, wanted) for a in allowed):
            granted.append(token)
    return granted


def for_user_app(
    scopes: list[str],
    *,
    patient: str | None,
    encounter: str | None,
    ehr_launch: bool,
    user_is_patient: bool,
) -> list[str]:
    """Narrow a user-facing app's scopes to what its launch context supports.

    patient/ scopes need a patient in context; a user who is a Patient gets no user/ scopes (they would reach
    other patients); system/ scopes belong to Backend Services, never to an app acting for a user."""
    granted = []
    for token in scopes:
        context = token.split("/", 1)[0] if "/" in token and token not in IDENTITY_SCOPES else None
        if token in SERVER_SCOPES or context == "system":
            continue
        if (context == "patient" and not patient) or (context == "user" and user_is_patient):
            continue
        if (
            (token == "launch" and not ehr_launch)
            or (token == "launch/patient" and not patient)
            or (token == "launch/encounter" and not encounter)
        ):
            continue
        granted.append(token)
    return granted


def for_backend(requested: str, registered: str) -> list[str]:
    """Backend Services get system/ scopes only, and this server's own (SERVER_SCOPES)."""
    return [t for t in within_client(requested, registered) if t.startswith("system/") or t in SERVER_SCOPES]


def wants_refresh_token(scopes: list[str] | str) -> bool:
    names = scopes.split() if isinstance(scopes, str) else scopes
    return any(s in REFRESH_SCOPES for s in names)

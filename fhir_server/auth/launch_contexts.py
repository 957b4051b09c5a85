"""EHR launch contexts (SMART App Launch "EHR launch"): the EHR (this server's sandbox page, or a script with a
user/ or system/ token) records who and what the launch is about and passes the app an opaque ``launch`` id;
the app sends it back to /auth/authorize and the token response carries the context.

A launch id alone grants nothing: the user still signs in, and when the launch names a user only that user can
complete it.

``appContext`` is what an EHR passes on from a CDS Hooks card's SMART link (CDS Hooks 2.0: "as part of the OAuth
2.0 access token response"): an opaque string of at most 4 KB, kept with the launch and returned unread in the
token response (and on every refresh of the grant) as ``appContext``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import orjson

from fhir_server.auth.credentials import new_secret
from fhir_server.auth.login_sessions import LoginSessions
from fhir_server.auth.oauth_request import Site
from fhir_server.auth.patients import PatientDirectory
from fhir_server.auth.revocation import utcnow
from fhir_server.auth.scopes import parse_scopes
from fhir_server.auth.server import SmartAuthorizationServer
from fhir_server.auth.tokens import TokenError
from fhir_server.store import oauth_store

LAUNCH_LIFETIME = timedelta(minutes=10)  # long enough for the user to sign in, short enough to be useless later
REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")
MAX_APP_CONTEXT_BYTES = 4096


class LaunchError(Exception):
    """An OAuth-style error: ``error`` code, description and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def launching_user(
    server: SmartAuthorizationServer,
    sessions: LoginSessions,
    site: Site,
    *,
    authorization: str | None,
    cookie: str | None,
    csrf_header: str | None,
) -> str:
    """Who creates the launch: a bearer token allowed to read Patients in user/ or system/ context, or a signed-in
    user's session with its CSRF token in ``X-CSRF-Token`` (the session cookie alone could be a forged request)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("login", "not a bearer token")
            claims = server.verify_access_token(token.strip(), site)
        except TokenError:
            raise LaunchError(
                "invalid_token", "The bearer token is not a valid access token of this server", 401
            ) from None
        if server.revocations.is_revoked(claims.get("jti"), claims.get("sid")):
            raise LaunchError("invalid_token", "The bearer token has been revoked", 401)
        grant = parse_scopes(str(claims.get("scope", "")))
        if not (grant.allows("Patient", "r", "user") or grant.allows("Patient", "r", "system")):
            raise LaunchError(
                "insufficient_scope", "Creating a launch needs a user/ or system/ scope that reads Patient", 403
            )
        return str(claims.get("fhirUser") or claims.get("sub") or claims.get("client_id"))
    session = sessions.load(cookie)
    user = server.user(session.user_id) if session and session.user_id else None
    if session is None or user is None:
        raise LaunchError("invalid_token", "Sign in, or send a bearer token with a user/ or system/ scope", 401)
    if not session.csrf_matches(csrf_header):
        raise LaunchError("invalid_request", "The X-CSRF-Token header does not match the signed-in session", 403)
    return user.fhir_user


def create_launch(
    server: SmartAuthorizationServer, patients: PatientDirectory, body: Any, created_by: str
) -> dict[str, Any]:
    """Validates the launch context (every reference must exist) and stores it; returns the launch id."""
    if not isinstance(body, dict):
        raise LaunchError("invalid_request", "The body must be a JSON object")
    unknown = set(body) - {"patient", "encounter", "fhirContext", "user", "need_patient_banner", "appContext"}
    if unknown:
        raise LaunchError("invalid_request", f"Unknown launch fields: {', '.join(sorted(unknown))[:200]}")
    patient = _existing(patients, "Patient", body.get("patient"))
    encounter = _existing(patients, "Encounter", body.get("encounter"))
    fhir_context = body.get("fhirContext") or []
    if not isinstance(fhir_context, list) or not all(_context_item(item) for item in fhir_context):
        raise LaunchError("invalid_request", "fhirContext must be a list of objects with a Type/id reference")
    for item in fhir_context:
        resource_type, _, resource_id = item["reference"].partition("/")
        if not patients.exists(resource_type, resource_id):
            raise LaunchError("invalid_request", f"fhirContext names {item['reference'][:130]}, which does not exist")
    username = body.get("user")
    if username is not None and (
        not isinstance(username, str) or oauth_store.get_user_by_name(server.engine, username) is None
    ):
        raise LaunchError("invalid_request", "user must be the username of a registered user")
    banner = body.get("need_patient_banner", False)
    if not isinstance(banner, bool):
        raise LaunchError("invalid_request", "need_patient_banner must be true or false")
    app_context = _app_context(body.get("appContext"))
    launch_id = new_secret(24)
    oauth_store.save_launch(
        server.engine,
        {
            "launch_id": launch_id,
            "patient": patient,
            "encounter": encounter,
            "fhir_context": orjson.dumps(fhir_context).decode(),
            "username": username,
            "need_patient_banner": banner,
            "app_context": app_context,
            "created_by": created_by[:200],
            "expires_at": utcnow() + LAUNCH_LIFETIME,
        },
    )
    return {"launch": launch_id, "expires_in": int(LAUNCH_LIFETIME.total_seconds())}


def _app_context(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise LaunchError("invalid_request", "appContext must be a string (JSON is sent as a string)")
    if len(value.encode()) > MAX_APP_CONTEXT_BYTES:
        raise LaunchError("invalid_request", f"appContext is longer than {MAX_APP_CONTEXT_BYTES} bytes")
    if "\x00" in value:  # no database keeps a NUL in text
        raise LaunchError("invalid_request", "appContext must not contain U+0000")
    return value


def _existing(patients: PatientDirectory, resource_type: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not patients.exists(resource_type, value):
        raise LaunchError("invalid_request", f"{resource_type.lower()} must be the id of an existing {resource_type}")
    return value


def _context_item(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("reference"), str)
        and bool(REFERENCE.fullmatch(item["reference"]))
    )

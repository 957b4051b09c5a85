"""Wires the authorization server into the app: its state objects, routes, page security headers and static
files.  Called by create_app before the FHIR routers, so /fhir/.well-known/smart-configuration is not taken
for a resource type."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from fhir_server.auth.authorize import AuthorizeFlow, SignInOptions
from fhir_server.auth.cors import RegisteredOrigins
from fhir_server.auth.external_idp import ExternalIdentityProvider, IdpConfig
from fhir_server.auth.external_sign_in import ExternalSignIn
from fhir_server.auth.login_sessions import LoginSessions
from fhir_server.auth.patients import PatientDirectory
from fhir_server.auth.server import SmartAuthorizationServer
from fhir_server.auth.throttle import LoginThrottle
from fhir_server.config import Settings
from fhir_server.engine.interactions import Interactions
from fhir_server.web import auth_routes, login_routes
from fhir_server.web.security import BrowserSecurityMiddleware

STATIC = Path(__file__).parent / "static"


def install_authorization_server(app: FastAPI, settings: Settings, fhir: Interactions) -> None:
    """Needs app.state.engine, .keys, .revocations and .audit.  Raises ValueError for an identity-provider
    configuration that cannot work (at start-up rather than at the first sign-in)."""
    state = app.state
    state.oauth = SmartAuthorizationServer(state.engine, state.keys, state.revocations, settings)
    state.login_sessions = LoginSessions(state.engine, settings.login_session_seconds)
    state.patients = PatientDirectory(fhir)
    provider_config = IdpConfig.from_settings(settings)
    throttle = LoginThrottle(
        state.engine,
        per_user=settings.login_max_failures_per_user,
        per_address=settings.login_max_failures_per_address,
        window_seconds=settings.login_failure_window_seconds,
    )
    options = SignInOptions(
        # Passwords can only be switched off when there is another way in.
        passwords=settings.local_passwords or provider_config is None,
        external_name=provider_config.display_name if provider_config else None,
        throttle=throttle,
    )
    state.authorize_flow = AuthorizeFlow(state.oauth, state.login_sessions, state.patients, state.audit, options)
    state.external_sign_in = (
        ExternalSignIn(
            ExternalIdentityProvider(provider_config, state.keys), state.authorize_flow, state.login_sessions
        )
        if provider_config
        else None
    )
    origins = RegisteredOrigins(state.engine)
    app.include_router(auth_routes.router)
    app.include_router(login_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        BrowserSecurityMiddleware, frame_ancestors=settings.frame_ancestors, origin_allowed=origins.allows
    )

"""Wires the authorization server into the app: its state objects, routes, page security headers and static
files.  Called by create_app before the FHIR routers, so /fhir/.well-known/smart-configuration is not taken
for a resource type."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from fhir_server.api.interactions import Interactions
from fhir_server.auth.authorize import AuthorizeFlow
from fhir_server.auth.cors import RegisteredOrigins
from fhir_server.auth.login_sessions import LoginSessions
from fhir_server.auth.patients import PatientDirectory
from fhir_server.auth.server import SmartAuthorizationServer
from fhir_server.config import Settings
from fhir_server.web import auth_routes, login_routes
from fhir_server.web.security import BrowserSecurityMiddleware

STATIC = Path(__file__).parent / "static"


def install_authorization_server(app: FastAPI, settings: Settings, fhir: Interactions) -> None:
    """Needs app.state.engine, .keys and .revocations."""
    state = app.state
    state.oauth = SmartAuthorizationServer(state.engine, state.keys, state.revocations, settings)
    state.login_sessions = LoginSessions(state.engine, settings.login_session_seconds)
    state.patients = PatientDirectory(fhir)
    state.authorize_flow = AuthorizeFlow(state.oauth, state.login_sessions, state.patients)
    origins = RegisteredOrigins(state.engine)
    app.include_router(auth_routes.router)
    app.include_router(login_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        BrowserSecurityMiddleware, frame_ancestors=settings.frame_ancestors, origin_allowed=origins.allows
    )

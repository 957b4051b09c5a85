"""The authorization server's machine endpoints: discovery, JWKS, token, introspection, revocation and launch.

Thin: read the request, hand it to auth/ in the thread pool (the database and the key store block), answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from authlib.oauth2.base import OAuth2Error
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.auth import discovery
from fhir_server.auth.launch_contexts import LaunchError, create_launch, launching_user
from fhir_server.auth.oauth_request import FormRequest
from fhir_server.auth.server import SmartAuthorizationServer
from fhir_server.web.login_routes import SESSION_COOKIE
from fhir_server.web.oauth_adapter import (
    NO_STORE,
    BadRequest,
    answer,
    error_response,
    oauth_error_response,
    read_body,
    read_oauth_request,
    site_of,
)

router = APIRouter()
# Under the FHIR base, where /{type}/{id} would take it: create_app includes it just before the FHIR instance routes.
fhir_discovery = APIRouter()
MAX_LAUNCH_BYTES = 16 * 1024
PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@router.get("/.well-known/smart-configuration", include_in_schema=False)
@fhir_discovery.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
async def smart_configuration(request: Request) -> Response:
    return _json(discovery.smart_configuration(site_of(request, request.app.state.settings)), headers=PUBLIC_CACHE)


@router.get("/.well-known/openid-configuration", include_in_schema=False)
@router.get("/auth/.well-known/openid-configuration", include_in_schema=False)
async def openid_configuration(request: Request) -> Response:
    return _json(discovery.openid_configuration(site_of(request, request.app.state.settings)), headers=PUBLIC_CACHE)


@router.get("/auth/jwks", include_in_schema=False)
async def jwks(request: Request) -> Response:
    return _json(await run_in_threadpool(request.app.state.keys.jwks), headers=PUBLIC_CACHE)


@router.get("/auth/smart-style.json", include_in_schema=False)
async def smart_style() -> Response:
    return _json(discovery.SMART_STYLE, headers=PUBLIC_CACHE)


async def _oauth(request: Request, handle: Callable[[SmartAuthorizationServer, FormRequest], Any]) -> Response:
    try:
        oauth_request = await read_oauth_request(request, request.app.state.settings)
        result = await run_in_threadpool(handle, request.app.state.oauth, oauth_request)
    except BadRequest as bad:
        return error_response("invalid_request", bad.description, bad.status)
    except OAuth2Error as error:
        return oauth_error_response(error)
    return answer(result)


@router.post("/auth/token", include_in_schema=False)
async def token(request: Request) -> Response:
    return await _oauth(request, lambda server, req: server.create_token_response(req))


@router.post("/auth/introspect", include_in_schema=False)
async def introspect(request: Request) -> Response:
    return await _oauth(request, lambda server, req: server.create_endpoint_response("introspection", req))


@router.post("/auth/revoke", include_in_schema=False)
async def revoke(request: Request) -> Response:
    return await _oauth(request, lambda server, req: server.create_endpoint_response("revocation", req))


@router.api_route("/auth/token", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/auth/introspect", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/auth/revoke", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/auth/launch", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def post_only(request: Request) -> Response:
    """An OAuth JSON error rather than the FHIR API's OperationOutcome (parameters never belong in a URL here)."""
    return error_response("invalid_request", f"{request.url.path} accepts POST only", 405, {"Allow": "POST"})


@router.post("/auth/launch", include_in_schema=False)
async def launch(request: Request) -> Response:
    """Creates an EHR launch context: {"patient", "encounter", "fhirContext", "user", "need_patient_banner",
    "appContext"}."""
    state = request.app.state
    site = site_of(request, state.settings)
    try:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise LaunchError("invalid_request", "The body must be application/json")
        created_by = await run_in_threadpool(
            launching_user,
            state.oauth,
            state.login_sessions,
            site,
            authorization=request.headers.get("authorization"),
            cookie=request.cookies.get(SESSION_COOKIE),
            csrf_header=request.headers.get("x-csrf-token"),
        )
        try:
            body = orjson.loads(await read_body(request, MAX_LAUNCH_BYTES))
        except orjson.JSONDecodeError:
            raise LaunchError("invalid_request", "The body is not valid JSON") from None
        created = await run_in_threadpool(create_launch, state.oauth, state.patients, body, created_by)
    except BadRequest as bad:
        return error_response("invalid_request", bad.description, bad.status)
    except LaunchError as err:
        challenge = {"WWW-Authenticate": f'Bearer error="{err.error}"'} if err.status in (401, 403) else None
        return error_response(err.error, err.description, err.status, challenge)
    return _json(created, 201, NO_STORE)

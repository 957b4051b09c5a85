"""The authorization server's pages: /auth/authorize (GET and POST), the sign-in form (with the external identity
provider's button and callback) and the patient picker.

Thin: parse, call auth/authorize.py's flow in the thread pool, render its outcome.  The login session cookie is
set here (see ``session_cookie``); CSRF tokens are checked by the flow against the server-side session.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from authlib.oauth2.base import OAuth2Error
from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.auth.authorize import Outcome, Redirect, error_page
from fhir_server.config import Settings
from fhir_server.web.oauth_adapter import BadRequest, form_params, oauth_request, query_params, site_of

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
SESSION_COOKIE = "fhir_auth_session"
MAX_CALLBACK_FIELDS = 16


def session_cookie(value: str, request: Request, settings: Settings) -> str:
    """The Set-Cookie value for the login session.

    Inside an EHR's iframe the page is a third-party context: the cookie must be ``SameSite=None`` (and
    ``Partitioned``, so it lives in that EHR's partition only).  Browsers accept both only together with
    ``Secure``, which in turn only works over https.  So: https requests (or FHIR_SERVER_COOKIE_SECURE=true behind
    a TLS proxy) get ``Secure; SameSite=None; Partitioned``; plain http (local development, the tests) gets
    ``SameSite=Lax``, which still carries the cookie through top-level sign-in flows but not into iframes.
    Written by hand because Starlette only emits ``Partitioned`` on Python 3.14+."""
    secure = request.url.scheme == "https" or settings.cookie_secure
    parts = [f"{SESSION_COOKIE}={value}", "Path=/auth", f"Max-Age={settings.login_session_seconds}", "HttpOnly"]
    parts += ["Secure", "SameSite=None", "Partitioned"] if secure else ["SameSite=Lax"]
    return "; ".join(parts)


def clear_session_cookie(request: Request, settings: Settings) -> str:
    """The Set-Cookie that signs the browser out of the authorization server (same name, path and partition)."""
    return session_cookie("", request, settings).replace(f"Max-Age={settings.login_session_seconds}", "Max-Age=0")


def render(request: Request, outcome: Outcome) -> Response:
    result = outcome.response
    response: Response
    if isinstance(result, Redirect):
        # 303 after a form POST so the browser follows with a GET; 302 as RFC 6749 shows for GET /authorize.
        response = RedirectResponse(result.location, status_code=303 if request.method == "POST" else 302)
    else:
        response = templates.TemplateResponse(request, result.template, result.context, status_code=result.status)
    if outcome.cookie:
        response.headers.append("set-cookie", session_cookie(outcome.cookie, request, request.app.state.settings))
    for name, value in outcome.headers.items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _cookie(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def _address(request: Request) -> str | None:
    """The client's address, as the sign-in throttle and the audit record it.  Behind a proxy listed in
    FHIR_SERVER_TRUSTED_PROXIES it is the forwarded one (middleware.TrustedProxyHeaders); from anyone else the
    connection's own, whatever X-Forwarded-For says, or a new header value per guess would dodge the limit."""
    return request.client.host if request.client else None


async def _form(request: Request) -> dict[str, str]:
    return dict(await form_params(request))


@router.api_route("/auth/authorize", methods=["GET", "POST"], include_in_schema=False)
async def authorize(request: Request) -> Response:
    """SMART's authorization endpoint; POST (form-encoded) is the ``authorize-post`` capability."""
    settings = request.app.state.settings
    try:
        params = query_params(request) if request.method == "GET" else await form_params(request)
        oauth = oauth_request(request, settings, params)
    except BadRequest as bad:
        return render(request, error_page("This app's request cannot be processed", bad.description, bad.status))
    except OAuth2Error as error:  # plain http to a non-loopback address
        return render(request, error_page("This app's request cannot be processed", str(error.description)))
    return render(request, await run_in_threadpool(request.app.state.authorize_flow.start, oauth, _cookie(request)))


@router.get("/auth/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    return render(request, await run_in_threadpool(request.app.state.authorize_flow.login_page, _cookie(request)))


@router.post("/auth/login", include_in_schema=False)
async def login(request: Request) -> Response:
    flow = request.app.state.authorize_flow
    try:
        form = await _form(request)
    except BadRequest as bad:
        return render(request, error_page("Sign-in failed", bad.description, bad.status))
    site = site_of(request, request.app.state.settings)
    return render(request, await run_in_threadpool(flow.login, _cookie(request), form, site, _address(request)))


@router.post("/auth/login/oidc", include_in_schema=False)
async def external_login(request: Request) -> Response:
    """The "Sign in with …" button: off to the external identity provider."""
    external = request.app.state.external_sign_in
    if external is None:
        return render(request, error_page("Not available", "No external identity provider is configured.", 404))
    try:
        form = await _form(request)
    except BadRequest as bad:
        return render(request, error_page("Sign-in failed", bad.description, bad.status))
    site = site_of(request, request.app.state.settings)
    return render(request, await run_in_threadpool(external.start, _cookie(request), form, site))


@router.get("/auth/login/oidc/callback", include_in_schema=False)
async def external_login_callback(request: Request) -> Response:
    external = request.app.state.external_sign_in
    if external is None:
        return render(request, error_page("Not available", "No external identity provider is configured.", 404))
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=MAX_CALLBACK_FIELDS)
    except ValueError:
        pairs = []
    params = dict(pairs)
    if not pairs or len(params) != len(pairs):  # a repeated state or code is ambiguous: refuse rather than pick
        return render(request, error_page("Sign-in failed", "The identity provider's answer is malformed."))
    site = site_of(request, request.app.state.settings)
    outcome = await run_in_threadpool(external.callback, _cookie(request), params, site, _address(request))
    return render(request, outcome)


@router.get("/auth/patient", include_in_schema=False)
async def patient_picker(request: Request) -> Response:
    flow = request.app.state.authorize_flow
    text = request.query_params.get("name", "")[:100]
    site = site_of(request, request.app.state.settings)
    outcome = await run_in_threadpool(lambda: flow.picker(_cookie(request), text, site=site, address=_address(request)))
    return render(request, outcome)


@router.post("/auth/patient", include_in_schema=False)
async def pick_patient(request: Request) -> Response:
    flow = request.app.state.authorize_flow
    try:
        form = await _form(request)
    except BadRequest as bad:
        return render(request, error_page("Patient choice failed", bad.description, bad.status))
    site = site_of(request, request.app.state.settings)
    return render(request, await run_in_threadpool(flow.pick, _cookie(request), form, site, _address(request)))

"""The sandbox EHR page (``/sandbox``, only with ``FHIR_SERVER_SANDBOX=true``): pick a demo client and a measure
or the clinician view, or open the supervision page as the demo supervisor; the page creates an EHR launch context
with this server's authorization server and sends the browser to ``/app/launch`` exactly as an external EHR would.

Each launch names the demo user it is for, and the authorization server refuses to complete a launch for another
user than the one signed in; so when a launch is for another demo user than the sandbox's last one (a cookie says
which), the sandbox, like an EHR where someone else logs in, signs the browser out of the authorization server
first: the launch asks who is signing in (the clinician, or the supervisor)."""

from __future__ import annotations

import hmac
import secrets
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.auth import urls
from fhir_server.auth.launch_contexts import LaunchError, create_launch
from fhir_server.clinician.instruments import choosable, chooser
from fhir_server.scoring.ages import age_on
from fhir_server.smart.sandbox import DEMO_PASSWORD, DEMO_USER, PATIENTS, SUPERVISOR_PASSWORD, SUPERVISOR_USER
from fhir_server.smart.sandbox_practice import CLIENTS, CLINICIANS, PROGRAMS
from fhir_server.web.form_pages import message, page_headers, read_form, render
from fhir_server.web.login_routes import clear_session_cookie

router = APIRouter(include_in_schema=False)
CSRF_COOKIE = "fit-sandbox-csrf"
USER_COOKIE = "fit-sandbox-user"  # the demo user of the last launch from this browser
VIEW = "view"  # the clinician view; every other action is a measure of the library's chooser
SUPERVISION = "supervision"  # the supervision page, no client: the demo supervisor's launch


def _measures(request: Request) -> dict[str, list[tuple[str, str]]]:
    """Per demo client, the measures "Choose the measure" would list for their age today: (id, abbreviation)."""
    library = request.app.state.fhir.library
    today = date.today().isoformat()
    return {p.id: [(m.id, m.abbreviation) for m in chooser(library, age_on(p.birth_date, today))] for p in PATIENTS}


def _origin(request: Request) -> str:
    return urls.origin(request.app.state.settings, str(request.base_url))


@router.get("/sandbox")
async def sandbox_page(request: Request) -> Response:
    await run_in_threadpool(request.app.state.sandbox.ensure, _origin(request))
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "sandbox.html",
        {
            "patients": PATIENTS,
            "measures": _measures(request),
            "csrf_token": token,
            "user": DEMO_USER,
            "password": DEMO_PASSWORD,
            "supervisor": SUPERVISOR_USER,
            "supervisor_password": SUPERVISOR_PASSWORD,
            "practice": {"programs": len(PROGRAMS), "clinicians": len(CLINICIANS), "clients": len(CLIENTS)},
        },
    )
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/sandbox")
    return response


@router.post("/sandbox/launch")
async def sandbox_launch(request: Request) -> Response:
    fields = await read_form(request)
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf_token", "").encode()):
        return message(request, "This page was out of date", "Nothing was launched. Please reload the sandbox.", 403)
    patient = fields.get("patient", "")
    chosen = fields.get("action", "")
    if chosen == SUPERVISION:  # no client: reports about the practice, for the demo supervisor
        action, context = ("view", SUPERVISION), {"user": SUPERVISOR_USER}
    else:
        action = ("view", "clinician") if chosen == VIEW else ("measure", chosen)
        context = {"patient": patient, "user": DEMO_USER, "need_patient_banner": True}
        if (chosen != VIEW and chosen not in choosable(request.app.state.fhir.library)) or patient not in {
            p.id for p in PATIENTS
        }:
            return message(request, "Unknown choice", "Pick one of the demo clients and a measure.", 400)
    origin = _origin(request)
    state = request.app.state
    try:
        created = await run_in_threadpool(create_launch, state.oauth, state.patients, context, "sandbox EHR page")
    except LaunchError as err:
        return message(request, "The launch could not be created", err.description, err.status)
    query = urlencode({"iss": f"{origin}/fhir", "launch": created["launch"], action[0]: action[1]})
    response = RedirectResponse(f"/app/launch?{query}", status_code=303, headers=page_headers(state.settings))
    if request.cookies.get(USER_COOKIE) != context["user"]:
        response.headers.append("set-cookie", clear_session_cookie(request, state.settings))
    response.set_cookie(USER_COOKIE, str(context["user"]), httponly=True, samesite="strict", path="/sandbox")
    return response

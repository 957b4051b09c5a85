"""The sandbox EHR page (``/sandbox``, only with ``FHIR_SERVER_SANDBOX=true``): pick a demo client and a measure
or the clinician view; the page creates an EHR launch context with this server's authorization server and sends
the browser to ``/app/launch`` exactly as an external EHR would."""

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
from fhir_server.smart.sandbox import DEMO_PASSWORD, DEMO_USER, PATIENTS
from fhir_server.smart.sandbox_practice import CLIENTS, CLINICIANS, PROGRAMS
from fhir_server.web.form_pages import message, page_headers, read_form, render

router = APIRouter(include_in_schema=False)
CSRF_COOKIE = "fit-sandbox-csrf"
VIEW = "view"  # the clinician view; every other action is a measure of the library's chooser


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
    action = ("view", "clinician") if chosen == VIEW else ("measure", chosen)
    if (chosen != VIEW and chosen not in choosable(request.app.state.fhir.library)) or patient not in {
        p.id for p in PATIENTS
    }:
        return message(request, "Unknown choice", "Pick one of the demo clients and a measure.", 400)
    origin = _origin(request)
    state = request.app.state
    try:
        created = await run_in_threadpool(
            create_launch,
            state.oauth,
            state.patients,
            {"patient": patient, "user": DEMO_USER, "need_patient_banner": True},
            "sandbox EHR page",
        )
    except LaunchError as err:
        return message(request, "The launch could not be created", err.description, err.status)
    query = urlencode({"iss": f"{origin}/fhir", "launch": created["launch"], action[0]: action[1]})
    return RedirectResponse(f"/app/launch?{query}", status_code=303, headers=page_headers(state.settings))

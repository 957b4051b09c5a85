"""The therapist's side of the alliance (issue 21), thin: the content is in clinician/ and smart/therapist_rating.py.

``POST /app/therapist-rating``   open the therapist's form for the session the clinician's pages asked about
                                 (CSRF-checked; the session and its Encounter are the server's, never the browser's)
``GET /app/concordance``         the signed-in clinician's own ratings beside their clients', month by month: a
                                 launch's session whose fhirUser is a clinician, as for the clinician view
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.clinician.blind import Unrated, latest_state, therapist_instrument
from fhir_server.clinician.concordance_page import build_page
from fhir_server.i18n.app_texts import N_
from fhir_server.operations.alliance_summary import summary_for
from fhir_server.smart import therapist_rating
from fhir_server.smart.sessions import AppSession
from fhir_server.smart.submission import MeasureUnavailable, rater_reference
from fhir_server.supervision.charts import month_label
from fhir_server.web.app_cookies import load_app_session, set_session_cookie
from fhir_server.web.clinician_routes import NOT_OPEN, launched
from fhir_server.web.form_pages import BodyTooLarge, message, page_headers, read_form, remember_language, render

router = APIRouter(prefix="/app", include_in_schema=False)
STALE = (N_("This page was out of date"), N_("Nothing was opened. Please reload the view."))
NOT_A_CLINICIAN = (
    N_("Who is signed in?"),
    N_(
        "This page shows the signed-in clinician's own ratings, and the EHR did not say which clinician is signed "
        "in. Please open it again from the EHR."
    ),
)
NO_FORM = (N_("No therapist's rating here"), N_("This server's library has no therapist's rating form."))


@router.post("/therapist-rating")
async def rate_the_session(request: Request) -> Response:
    session = await launched(request)
    try:
        fields = await read_form(request)
    except BodyTooLarge:
        return message(request, *STALE, 413)
    if session is None:
        return message(request, *NOT_OPEN, 403)
    if not session.csrf_ok(fields.get("csrf_token")):
        return message(request, *STALE, 403)
    opened = await run_in_threadpool(_open, request, session)
    if isinstance(opened, tuple):
        return message(request, *opened, 403)
    state = request.app.state
    response = RedirectResponse("/app/form", status_code=303, headers=page_headers(state.settings))
    set_session_cookie(response, opened, state.settings.app_session_seconds)
    return response


@router.get("/concordance")
async def concordance(request: Request) -> Response:
    session = remember_language(request, await run_in_threadpool(load_app_session, request))
    if session is None or not session.access_token:
        return message(request, *NOT_OPEN, 403)
    practitioner = rater_reference(session.fhir_user)
    if practitioner is None:  # the page is the signed-in clinician's; without one it would be nobody's
        return message(request, *NOT_A_CLINICIAN, 403)
    page = await run_in_threadpool(build_page, request.app.state.fhir, practitioner, datetime.now(UTC).date())
    context = {"page": page, "month_label": month_label, "back": bool(session.patient)}
    return render(request, "concordance.html", context)


def _open(request: Request, session: AppSession) -> str | tuple[str, str]:
    """The new session's id, or the (title, text) of why the form cannot open.  The session rated is the one the
    view withholds (or offers) now — the client's latest, recent, unrated rating — else the launch's own."""
    fhir = request.app.state.fhir
    unrated = latest_state(fhir, summary_for(fhir, session.patient or ""))
    unrated = unrated if isinstance(unrated, Unrated) else None
    encounter = unrated.encounter if unrated is not None else session.encounter
    refused = therapist_rating.refusal(session, encounter=encounter)
    if refused is not None or encounter is None:
        return refused or therapist_rating.NO_SESSION
    instrument = therapist_instrument(fhir, unrated)
    try:
        canonical = request.app.state.rating_form.resolve_measure(instrument or "")
    except MeasureUnavailable:
        return NO_FORM
    return therapist_rating.open_rating(request.app.state.app_sessions, session, canonical, encounter)

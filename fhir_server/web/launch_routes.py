"""SMART launch endpoints of the app (thin; the logic is in smart/launch.py).

``GET /app/launch?iss=…&launch=…[&measure=srs][&view=clinician|supervision|therapist-rating]``  EHR launch
                                                                  (standalone without ``launch``); the therapist's
                                                                  rating opens the library's clinician-rated form
``GET /app/callback?code=…&state=…``                              the EHR's answer; its token response's
                                                                  ``appContext`` (a CDS card's link) may choose
                                                                  the view, the measure or a Flag to point at
``GET /app/choose`` / ``POST /app/choose``                        the clinician picks the measure: the library's
                                                                  instruments for the client's age, with when
                                                                  each is given (clinician/instruments.py)
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.auth import urls
from fhir_server.clinician.blind import therapist_instrument
from fhir_server.clinician.instruments import choosable, chooser
from fhir_server.config import Settings
from fhir_server.ehr.tokens import SmartDiscovery
from fhir_server.i18n.app_texts import N_
from fhir_server.scoring.ages import age_on
from fhir_server.smart.launch import VIEWS, LaunchRefused, SmartLauncher
from fhir_server.smart.sandbox import Sandbox
from fhir_server.smart.sessions import AppSession
from fhir_server.smart.submission import MeasureUnavailable
from fhir_server.smart.therapist_rating import THERAPIST_RATING
from fhir_server.web.app_cookies import load_app_session, set_session_cookie
from fhir_server.web.clinician_routes import patient_details
from fhir_server.web.form_pages import message, page_headers, read_form, remember_language, render

router = APIRouter(prefix="/app", include_in_schema=False)
NOT_OPEN = (N_("This app is not open"), N_("Please open it again from the EHR."))
STALE = (N_("This page was out of date"), N_("Nothing was changed. Please open the app again."))
UNKNOWN = N_("Unknown measure")
NOT_LISTED = N_("Please choose one of the listed measures.")
NO_FORM = (N_("No therapist's rating here"), N_("This server's library has no therapist's rating form."))


def _refusal(title: str, text: str, **params: str) -> LaunchRefused:
    """A refusal whose text has placeholders, filled in after translation (``_refused``)."""
    refused = LaunchRefused(title, text)
    refused.params = params  # type: ignore[attr-defined]
    return refused


def _redirect_uri(request: Request) -> str:
    return f"{urls.origin(request.app.state.settings, str(request.base_url))}/app/callback"


def _refused(request: Request, refused: LaunchRefused) -> Response:
    return message(request, refused.title, refused.text, refused.status, **getattr(refused, "params", {}))


def _go(request: Request, location: str, session_id: str | None = None) -> Response:
    response = RedirectResponse(location, status_code=303, headers=page_headers(request.app.state.settings))
    if session_id is not None:
        set_session_cookie(response, session_id, request.app.state.settings.app_session_seconds)
    return response


@router.get("/launch")
async def launch(request: Request) -> Response:
    params = request.query_params
    view = params.get("view", "form")
    measure = params.get("measure")
    try:
        canonical = None
        if measure and view == "form":
            try:
                canonical = request.app.state.rating_form.resolve_measure(measure)
            except MeasureUnavailable:
                raise _refusal(UNKNOWN, N_("This app has no measure called '%(name)s'."), name=measure[:60]) from None
        elif view == THERAPIST_RATING:
            canonical = _therapist_form(request, measure)
        started = await run_in_threadpool(
            request.app.state.smart_launcher.start,
            iss=params.get("iss", ""),
            launch=params.get("launch"),
            measure=canonical,
            view=view if view in VIEWS else "?",
            redirect_uri=_redirect_uri(request),
        )
    except LaunchRefused as refused:
        return _refused(request, refused)
    return _go(request, started.authorize_url, started.session_id)


def _therapist_form(request: Request, measure: str | None) -> str:
    """The canonical of the therapist's form a ``view=therapist-rating`` launch opens: the clinician-rated
    instrument ``measure`` names, else the library's first."""
    service = request.app.state.rating_form
    named = measure or therapist_instrument(request.app.state.fhir)
    if named is None:
        raise LaunchRefused(
            N_("No therapist's rating here"), N_("This server's library has no therapist's rating form.")
        )
    try:
        canonical = service.resolve_measure(named)
    except MeasureUnavailable:
        raise _refusal(UNKNOWN, N_("This app has no measure called '%(name)s'."), name=named[:60]) from None
    rules = request.app.state.fhir.library.rules_for(canonical.partition("|")[0])
    if rules is None or rules.rater != "clinician":
        raise _refusal(
            N_("Not a therapist's rating"), N_("'%(name)s' is rated by the client, not the therapist."), name=named[:60]
        )
    return canonical


@router.get("/callback")
async def callback(request: Request) -> Response:
    params = request.query_params
    session = await run_in_threadpool(load_app_session, request)
    try:
        session_id, session = await run_in_threadpool(
            lambda: request.app.state.smart_launcher.finish(
                session,
                code=params.get("code"),
                state=params.get("state"),
                error=params.get("error"),
                redirect_uri=_redirect_uri(request),
                resolve_measure=request.app.state.rating_form.resolve_measure,
            )
        )
    except LaunchRefused as refused:
        return _refused(request, refused)
    if session.app_view == "supervision":
        return _go(request, "/app/supervision", session_id)
    if session.app_view == "clinician":  # the fragment scrolls to the Flag a card pointed at (a checked FHIR id)
        fragment = f"#flag-{session.app_flag}" if session.app_flag else ""
        return _go(request, f"/app/clinician{fragment}", session_id)
    return _go(request, "/app/form" if session.questionnaire else "/app/choose", session_id)


@router.get("/choose")
async def choose(request: Request) -> Response:
    session = remember_language(request, await run_in_threadpool(load_app_session, request))
    if session is None or not session.access_token:
        return message(request, *NOT_OPEN, 403)
    choices = await run_in_threadpool(_choices, request, session)
    return render(request, "choose.html", {"choices": choices, "csrf_token": session.csrf_token})


def _choices(request: Request, session: AppSession) -> list[tuple[str, str, str]]:
    """(measure, name, when it is given) of the library's instruments for the launch patient's age (the Patient
    here, else the EHR's, as the clinician view's banner reads it); the adult forms when the age is unknown."""
    details = patient_details(request, session) if session.patient else None
    years = age_on(details.get("birth_date") if details else None, None)
    return [(i.id, i.chooser_title, i.when) for i in chooser(request.app.state.fhir.library, years)]


@router.post("/choose")
async def chosen(request: Request) -> Response:
    sessions = request.app.state.app_sessions
    session = remember_language(request, await run_in_threadpool(load_app_session, request))
    fields = await read_form(request)
    if session is None or not session.access_token or not session.csrf_ok(fields.get("csrf_token")):
        return message(request, *STALE, 403)
    if fields.get("measure") not in choosable(request.app.state.fhir.library):
        return message(request, UNKNOWN, NOT_LISTED, 400)
    canonical = request.app.state.rating_form.resolve_measure(fields["measure"])
    await run_in_threadpool(sessions.update, session, questionnaire=canonical)
    return _go(request, "/app/form")


def install_launch(app: FastAPI, settings: Settings) -> None:
    """Needs app.state.app_sessions, .rating_form and .outbox_worker (whose HTTP client and limits it shares)."""
    from fhir_server.web import clinician_routes, sandbox_routes, supervision_routes, therapist_routes

    state = app.state
    discovery = SmartDiscovery(state.outbox_worker.http)
    state.smart_launcher = SmartLauncher(state.engine, state.keys, state.app_sessions, discovery)
    app.include_router(router)
    app.include_router(clinician_routes.router)
    app.include_router(supervision_routes.router)
    app.include_router(therapist_routes.router)
    if settings.sandbox:
        state.sandbox = Sandbox(state.engine, state.fhir)
        app.include_router(sandbox_routes.router)

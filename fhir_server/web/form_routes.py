"""The rating form's HTTP endpoints (thin: read the request, call the form service in the thread pool, answer).

``GET /app/form``         the session's measure as a page, its draft filled in; the thank-you page once submitted
                          (for the therapist's own rating of the session: the clinician view instead)
``POST /app/form/draft``  the answers so far (JSON, ``X-CSRF-Token``), so a reload restores them
``POST /app/form``        submit (form fields with ``csrf_token``) → 303 to ``/app/form``, which then thanks
``POST /app/form/language`` the form's language switch (``language``, ``csrf_token``, and ``draft``: the answers on
                          the page as JSON, kept as the draft) → 303 to ``/app/form``, now in that language
``POST /app/dev-session`` development and tests only (FHIR_SERVER_APP_DEV_SESSIONS=true): a session for a patient
                          and a measure without an EHR launch; the route does not exist otherwise
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.i18n.app_texts import N_
from fhir_server.smart import therapist_rating
from fhir_server.smart.form_model import Form, UnsupportedQuestionnaire
from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.smart.submission import FormService, MeasureUnavailable, NoRater
from fhir_server.store.errors import DATABASE_ERRORS
from fhir_server.validation import check_id
from fhir_server.web import form_language
from fhir_server.web.app_cookies import load_app_session, set_session_cookie
from fhir_server.web.form_pages import (
    WEB,
    BodyTooLarge,
    message,
    page_headers,
    read_body,
    read_form,
    remember_language,
    render,
    translator,
)

log = logging.getLogger("fhir_server.app")
router = APIRouter(prefix="/app", include_in_schema=False)
dev_router = APIRouter(prefix="/app", include_in_schema=False)

FORM_PATH = "/app/form"
# English msgids, translated when the page renders (form_pages.message)
CLOSED = (
    N_("This form is not open"),
    N_("It has expired or was never opened on this device. Please hand the device back so it can be opened again."),
)
STALE = (N_("This page was out of date"), N_("Nothing was sent. Please reload the page and try again."))
NOT_SENT = N_("Your answers could not be sent just now; nothing was lost. Please try again in a moment.")
NO_MEASURE = (N_("No form to show"), N_("No measure has been chosen for this session. Please hand the device back."))
TOO_MUCH = (N_("Too much data"), N_("Nothing was sent. Please reload the page and try again."))
NOT_YET = N_("Not sent yet")


def _service(request: Request) -> FormService:
    return request.app.state.rating_form


async def _session(request: Request) -> AppSession | None:
    """The request's session; its language is the language of the pages this request renders."""
    return remember_language(request, await run_in_threadpool(load_app_session, request))


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _posted_form(request: Request) -> tuple[AppSession, dict[str, str]] | Response:
    """A form POST's session and fields, or the page that says why not: no session, too much, a stale page."""
    session = await _session(request)
    if session is None:
        return message(request, *CLOSED, 403)
    try:
        fields = await read_form(request)
    except BodyTooLarge:
        return message(request, *TOO_MUCH, 413)
    if not session.csrf_ok(fields.get("csrf_token")):
        return message(request, *STALE, 403)
    return session, fields


@router.get("/form")
async def show_form(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return message(request, *CLOSED, 403)
    therapists = _service(request).clinician_rated(session)
    if session.submitted:  # a reload, the back button or a second tab after submission: never a second form
        if therapists:  # the therapist's rating: on to the view, which now shows the client's rating beside it
            return RedirectResponse(therapist_rating.AFTER, status_code=303, headers={"Cache-Control": "no-store"})
        return render(request, "thanks.html", {})
    refused = therapist_rating.refusal(session, encounter=session.encounter) if therapists else None
    if refused is not None:
        return message(request, *refused, 403)
    try:
        session, form, language = await run_in_threadpool(_form_in_language, request, session)
    except (MeasureUnavailable, UnsupportedQuestionnaire):
        return message(request, *NO_MEASURE, 409)
    return _form_page(request, session, form, language, session.draft, {}, session.csrf_token)


def _form_in_language(request: Request, session: AppSession) -> tuple[AppSession, Form, str]:
    """The session's form in its language, chosen and stored in the session the first time (blocking)."""
    service = _service(request)
    form = service.form_for(session)
    language = form_language.choose(request, session, form)
    if language != session.language:
        session = request.app.state.app_sessions.update(session, language=language) or session
        session.language = language
        form = service.form_for(session)
    remember_language(request, session)
    return session, form, language


def _form_page(
    request: Request,
    session: AppSession,
    form: Form,
    language: str,
    answers: dict[str, Any],
    errors: dict[str, str],
    csrf_token: str,
    status: int = 200,
) -> Response:
    gettext = translator(request, language).gettext
    context = {
        "form": form,
        "answers": answers,
        "errors": {link_id: form_language.message_of(gettext, text) for link_id, text in errors.items()},
        "csrf_token": csrf_token,
        "languages": form_language.switch(request, form, language),
        "script_texts": form_language.script_texts(request, language, form),
    }
    return render(request, "form.html", context, status, language)


@router.post("/form/language")
async def switch_language(request: Request) -> Response:
    """The client's own choice of language: stored in the session (it outranks the launch's and the browser's),
    with the answers on the page kept as the draft, so nothing marked is lost."""
    posted = await _posted_form(request)
    if isinstance(posted, Response):
        return posted
    session, fields = posted
    try:
        form = await run_in_threadpool(_service(request).form_for, session)
    except (MeasureUnavailable, UnsupportedQuestionnaire):
        return message(request, *NO_MEASURE, 409)
    chosen = fields.get("language")
    if chosen in form_language.available(request, form):
        if not session.submitted:
            await run_in_threadpool(_keep_draft, request, session, fields.get("draft"))
        await run_in_threadpool(request.app.state.app_sessions.update, session, language=chosen)
    return RedirectResponse(FORM_PATH, status_code=303, headers={"Cache-Control": "no-store"})


def _keep_draft(request: Request, session: AppSession, draft: str | None) -> None:
    """The answers the page held when the language was switched (the script sends them; without it the draft
    saved on each change stands)."""
    if not draft:
        return
    try:
        _service(request).save_draft(session, orjson.loads(draft))
    except (ValueError, orjson.JSONDecodeError):  # answers the form cannot take: the saved draft stands
        log.info("a language switch's answers were not kept as the draft")


@router.post("/form/draft")
async def save_draft(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _json({"error": "the session is not open"}, 403)
    if not session.csrf_ok(request.headers.get("x-csrf-token")):
        return _json({"error": "missing or wrong CSRF token"}, 403)
    try:
        body = orjson.loads(await read_body(request))
    except BodyTooLarge:
        return _json({"error": "the draft is too large"}, 413)
    except orjson.JSONDecodeError:
        return _json({"error": "the draft is not JSON"}, 400)
    try:
        draft = body.get("answers") if isinstance(body, dict) else None
        saved = await run_in_threadpool(_service(request).save_draft, session, draft)
    except ValueError as exc:
        return _json({"error": str(exc)}, 422)
    except (MeasureUnavailable, UnsupportedQuestionnaire):
        return _json({"error": "no measure"}, 409)
    return Response(status_code=204) if saved else _json({"error": "already submitted"}, 409)


@router.post("/form")
async def submit(request: Request) -> Response:
    posted = await _posted_form(request)
    if isinstance(posted, Response):
        return posted
    session, fields = posted
    after = getattr(request.app.state, "after_submission", None)
    try:
        outcome = await run_in_threadpool(_service(request).submit, session, fields, after)
    except (MeasureUnavailable, UnsupportedQuestionnaire):
        return message(request, *NO_MEASURE, 409)
    except NoRater:
        return message(request, *therapist_rating.NO_RATER, 403)
    except (FhirError, *DATABASE_ERRORS) as exc:
        log.warning("a form submission was not stored: %s", type(exc).__name__)  # no answers in logs
        # Nothing was stored (one transaction); the answers are still in the page and the draft.
        return message(request, NOT_YET, NOT_SENT, 503)
    except Exception:  # e.g. the after_submission hook: still one transaction, so still nothing stored
        log.exception("a form submission failed")
        return message(request, NOT_YET, NOT_SENT, 500)
    if outcome.errors:
        session, form, language = await run_in_threadpool(_form_in_language, request, session)
        return _form_page(request, session, form, language, outcome.answers, outcome.errors, fields["csrf_token"], 422)
    # Post/redirect/get: a reload of the thank-you page never re-posts the answers.  The therapist's rating goes on
    # to the view (GET /app/form would send it there too).
    next_page = therapist_rating.AFTER if _service(request).clinician_rated(session) else FORM_PATH
    return RedirectResponse(next_page, status_code=303, headers={"Cache-Control": "no-store"})


@dev_router.post("/dev-session")
async def dev_session(request: Request) -> Response:
    """Form fields ``patient``, ``measure`` (``srs``, a url or url|version) and optional ``encounter``."""
    try:
        fields = await read_form(request)
        patient, encounter = fields.get("patient", ""), fields.get("encounter") or None
        check_id(patient)
        if encounter:
            check_id(encounter)
        canonical = _service(request).resolve_measure(fields.get("measure", ""))
    except (BodyTooLarge, FhirError, MeasureUnavailable) as exc:
        return message(request, "No session", f"The development session was not created: {exc}", 400)  # tests only
    sessions: AppSessionStore = request.app.state.app_sessions
    session_id, _ = await run_in_threadpool(
        sessions.create_session, patient=patient, encounter=encounter, questionnaire=canonical
    )
    response = RedirectResponse(FORM_PATH, status_code=303, headers=page_headers(request.app.state.settings))
    set_session_cookie(response, session_id, request.app.state.settings.app_session_seconds)
    return response


def install_form(app: FastAPI, settings: Settings) -> None:
    """The form's state objects, routes and static files; the dev-session route only when switched on."""
    app.state.app_sessions = AppSessionStore(app.state.engine, settings.app_session_seconds)
    app.state.rating_form = FormService(app.state.fhir, app.state.app_sessions)
    app.include_router(router)
    if settings.app_dev_sessions:
        app.include_router(dev_router)
    app.mount("/app/static", StaticFiles(directory=WEB / "static" / "app"), name="app-static")

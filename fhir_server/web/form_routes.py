"""The rating form's HTTP endpoints (thin: read the request, call the form service in the thread pool, answer).

``GET /app/form``         the session's measure as a page, its draft filled in; the thank-you page once submitted
                          (for the therapist's own rating of the session: the clinician view instead)
``POST /app/form/draft``  the answers so far (JSON, ``X-CSRF-Token``), so a reload restores them
``POST /app/form``        submit (form fields with ``csrf_token``) → 303 to ``/app/form``, which then thanks
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
from fhir_server.smart import therapist_rating
from fhir_server.smart.form_model import UnsupportedQuestionnaire
from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.smart.submission import FormService, MeasureUnavailable, NoRater
from fhir_server.store.errors import DATABASE_ERRORS
from fhir_server.validation import check_id
from fhir_server.web.app_cookies import load_app_session, set_session_cookie
from fhir_server.web.form_pages import WEB, BodyTooLarge, message, page_headers, read_body, read_form, render

log = logging.getLogger("fhir_server.app")
router = APIRouter(prefix="/app", include_in_schema=False)
dev_router = APIRouter(prefix="/app", include_in_schema=False)

FORM_PATH = "/app/form"
CLOSED = (
    "This form is not open",
    "It has expired or was never opened on this device. Please hand the device back so it can be opened again.",
)
STALE = ("This page was out of date", "Nothing was sent. Please reload the page and try again.")
NOT_SENT = "Your answers could not be sent just now; nothing was lost. Please try again in a moment."
NO_MEASURE = ("No form to show", "No measure has been chosen for this session. Please hand the device back.")


def _service(request: Request) -> FormService:
    return request.app.state.rating_form


async def _session(request: Request) -> AppSession | None:
    return await run_in_threadpool(load_app_session, request)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


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
        form = await run_in_threadpool(_service(request).form_for, session)
    except (MeasureUnavailable, UnsupportedQuestionnaire):
        return message(request, *NO_MEASURE, 409)
    context = {"form": form, "answers": session.draft, "errors": {}, "csrf_token": session.csrf_token}
    return render(request, "form.html", context)


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
    session = await _session(request)
    if session is None:
        return message(request, *CLOSED, 403)
    try:
        fields = await read_form(request)
    except BodyTooLarge:
        return message(request, "Too much data", "Nothing was sent. Please reload the page and try again.", 413)
    if not session.csrf_ok(fields.get("csrf_token")):
        return message(request, *STALE, 403)
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
        return message(request, "Not sent yet", NOT_SENT, 503)
    except Exception:  # e.g. the after_submission hook: still one transaction, so still nothing stored
        log.exception("a form submission failed")
        return message(request, "Not sent yet", NOT_SENT, 500)
    if outcome.errors:
        form = await run_in_threadpool(_service(request).form_for, session)
        context = {
            "form": form,
            "answers": outcome.answers,
            "errors": outcome.errors,
            "csrf_token": fields["csrf_token"],
        }
        return render(request, "form.html", context, 422)
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
        return message(request, "No session", f"The development session was not created: {exc}", 400)
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

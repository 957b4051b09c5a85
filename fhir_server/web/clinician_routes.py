"""The clinician's pages (thin; the content is assembled in clinician/view.py).

``GET /app/clinician``                                the alliance view of the launch's patient (emphasising the
                                                      Flag a CDS card's appContext pointed at, while it is open)
``POST /app/clinician/flags/{id}/acknowledge``         close a concern as acknowledged (CSRF-checked)
``POST /app/clinician/requests``                      ask the client to fill in a measure (an SDC Task; CSRF-checked)
``POST /app/clinician/requests/{id}/cancel``          withdraw an open request (CSRF-checked)
``GET /app/result``                                   after the hand-back: today's score, concerns and EHR state
                                                      (or, until the therapist has rated the session, the offer
                                                      of their form in its place: clinician/blind.py)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server import fhirjson
from fhir_server.auth import urls
from fhir_server.clinician.blind import Unrated, latest_state, withheld
from fhir_server.clinician.requests import RequestInvalid, TaskRefused
from fhir_server.clinician.requests import ask as ask_for_measure
from fhir_server.clinician.requests import withdraw as withdraw_request
from fhir_server.clinician.view import FlagNotOpen, acknowledge, build_view
from fhir_server.ehr import outbox
from fhir_server.ehr import registry as ehr_registry
from fhir_server.errors import FhirError
from fhir_server.i18n.app_texts import N_
from fhir_server.operations.alliance_summary import summary_for
from fhir_server.scoring.summary import ActiveFlag
from fhir_server.smart.ehr_reads import read_from_ehr
from fhir_server.smart.sessions import AppSession
from fhir_server.validation import check_id
from fhir_server.web.app_cookies import load_app_session
from fhir_server.web.form_pages import message, page_headers, page_language, read_form, remember_language, render

router = APIRouter(prefix="/app", include_in_schema=False)
NOT_OPEN = (N_("This view is not open"), N_("Please open it again from the client's chart in the EHR."))
NOT_YOURS = (N_("This view is for clinicians"), N_("It shows the therapist's own notes on the sessions."))
STALE = (N_("This page was out of date"), N_("Nothing was changed. Please reload the view."))
WHO = (N_("Who is acknowledging?"), N_("The EHR did not say who is signed in."))
CLOSED = (N_("This concern is no longer open"), N_("It was closed meanwhile. Reload the view."))
TODAY = N_("Today's rating")
CLIENT_USERS = ("Patient", "RelatedPerson")


async def launched(request: Request) -> AppSession | None:
    session = remember_language(request, await run_in_threadpool(load_app_session, request))
    return session if session is not None and session.access_token and session.patient else None


def signed_in_as_the_client(session: AppSession) -> bool:
    """A launch whose signed-in user (fhirUser) is a patient or a relative — the client's own launch — is no
    clinician's: the clinician's pages show what is theirs (the therapist's ratings and gaps, the concerns' wording
    for clinicians).  A launch that names no user (an EHR without openid) is the EHR's, as before."""
    parts = (session.fhir_user or "").rstrip("/").split("/")
    return len(parts) >= 2 and parts[-2] in CLIENT_USERS


def patient_details(request: Request, session: AppSession) -> dict[str, Any] | None:
    """The banner: the Patient as stored here, else as the EHR has it (read with the launch's token)."""
    stored = request.app.state.fhir.repo.read("Patient", session.patient or "")
    patient = fhirjson.loads_stored(stored.content or "{}") if stored and not stored.deleted else None
    if patient is None and session.launch_iss and session.access_token:
        # the view still works without a banner name (the id is shown) when the EHR cannot be read
        patient = read_from_ehr(session.launch_iss, session.access_token, f"Patient/{session.patient}", timeout=5.0)
    if not isinstance(patient, dict):
        return None
    name = next(iter(patient.get("name") or []), {})
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return {"name": text or f"Patient/{session.patient}", "birth_date": patient.get("birthDate"),
            "gender": patient.get("gender")}  # fmt: skip


@router.get("/clinician")
async def clinician(request: Request) -> Response:
    session = await launched(request)
    if session is None:
        return message(request, *NOT_OPEN, 403)
    if signed_in_as_the_client(session):
        return message(request, *NOT_YOURS, 403)
    state = request.app.state

    def assemble() -> tuple[Any, dict[str, Any] | None]:
        details = patient_details(request, session)
        birth_date = details.get("birth_date") if details else None
        view = build_view(state.fhir, session.patient or "", birth_date)
        return view, details

    view, details = await run_in_threadpool(assemble)
    view.flags = [(in_language(request, flag), earlier) for flag, earlier in view.flags]
    banner = details or {"name": f"Patient/{session.patient}"} if session.need_patient_banner else None
    # Only an open concern of this patient can be emphasised; one closed meanwhile gets a one-line note.
    focus = session.app_flag
    focus_open = focus is not None and any(flag.id == focus for flag, _ in view.flags)
    context = {"view": view, "banner": banner, "csrf_token": session.csrf_token, "rating": view.rating}
    return render(request, "clinician.html", {**context, "focus": focus, "focus_open": focus_open})


@router.post("/clinician/flags/{flag_id}/acknowledge")
async def acknowledge_flag(flag_id: str, request: Request) -> Response:
    session = await launched(request)
    fields = await read_form(request)
    if session is None or not session.csrf_ok(fields.get("csrf_token")):
        return message(request, *STALE, 403)
    if not session.fhir_user:
        return message(request, *WHO, 403)
    if signed_in_as_the_client(session):
        return message(request, *NOT_YOURS, 403)
    # fhirUser is a URL; one on this server is recorded as a relative reference, an EHR's stays absolute
    own_base = urls.fhir_base(request.app.state.settings, str(request.base_url)) + "/"
    who = session.fhir_user.removeprefix(own_base)
    try:
        check_id(flag_id)
        await run_in_threadpool(
            acknowledge,
            request.app.state.fhir,
            session.patient or "",
            flag_id,
            who,
            session.ehr_id,
            request.app.state.app_sessions.token_ref(session),
        )
    except (FlagNotOpen, FhirError):
        return message(request, *CLOSED, 409)
    if session.app_flag == flag_id:  # the card's concern is dealt with: no "no longer open" note for it
        await run_in_threadpool(request.app.state.app_sessions.update, session, app_flag=None)
    headers = page_headers(request.app.state.settings)
    return RedirectResponse("/app/clinician#flags", status_code=303, headers=headers)


@router.get("/result")
async def result(request: Request) -> Response:
    session = await launched(request)
    if session is None or not session.response_id:
        return message(request, *NOT_OPEN, 403)
    state = request.app.state

    def assemble() -> dict[str, Any]:
        everything = summary_for(state.fhir, session.patient or "")
        rating = latest_state(state.fhir, everything)
        summary = withheld(everything, rating)  # today's SRS waits for the therapist's rating (clinician/blind.py)
        reference = f"QuestionnaireResponse/{session.response_id}"
        scores = [
            {"display": m.display, "value": p.value, "interpretation": "; ".join(t for t in p.interpretation if t)}
            for m in summary.measures
            for p in m.points
            if p.response == reference
        ]
        observations = {p.observation for m in summary.measures for p in m.points if p.response == reference}
        flags = [in_language(request, f) for f in summary.flags if f.observation in observations]
        delivery = outbox.delivery_state(state.engine, session.response_id or "")
        mine = isinstance(rating, Unrated) and rating.response == reference  # this response's session is to rate
        return {
            "measure": TODAY,
            "scores": scores,
            "flags": flags,
            "delivery": delivery,
            "rating": rating if mine else None,
            "csrf_token": session.csrf_token,
        }

    return render(request, "result.html", await run_in_threadpool(assemble))


# -- "Ask the client to fill in …": requests to complete a measure (clinician/requests.py) --------------------------
REQUEST_REFUSED = ("This request could not be made", "Check the measure, the channel and the address, then try again.")


def in_language(request: Request, flag: ActiveFlag) -> ActiveFlag:
    """The Flag's stored text (English, as scoring wrote it) in the page's language, from the instrument's
    texts.json; the English when the text is not one of its rules' messages."""
    said = request.app.state.fhir.library.flag_text(flag.code, flag.message, page_language(request))
    return flag if said == flag.message else dataclasses.replace(flag, message=said)


REQUEST_CLOSED = ("This request is no longer open", "It was completed or withdrawn meanwhile. Reload the view.")


async def _clinician_form(request: Request) -> tuple[AppSession | None, dict[str, str], Response | None]:
    """The launch, the posted fields, and the refusal when this POST is not a clinician's (CSRF as every app POST;
    the client's own launch, or one that names no user, may not ask: the Task's requester is the signed-in user)."""
    session = await launched(request)
    fields = await read_form(request)
    if session is None or not session.csrf_ok(fields.get("csrf_token")):
        return None, fields, message(request, "This page was out of date", "Nothing was changed. Please reload.", 403)
    if not session.fhir_user:
        return None, fields, message(request, "Who is asking?", "The EHR did not say who is signed in.", 403)
    if signed_in_as_the_client(session):
        return None, fields, message(request, *NOT_YOURS, 403)
    return session, fields, None


@router.post("/clinician/requests")
async def ask_the_client(request: Request) -> Response:
    session, fields, refused = await _clinician_form(request)
    if refused is not None or session is None:
        return refused or message(request, *NOT_OPEN, 403)
    state = request.app.state
    own_base = urls.fhir_base(state.settings, str(request.base_url)) + "/"
    registration = ehr_registry.get(state.engine, session.ehr_id) if session.ehr_id is not None else None
    try:
        await run_in_threadpool(
            ask_for_measure,
            state.fhir,
            patient=session.patient or "",
            measure=fields.get("measure", ""),
            channel=fields.get("channel", ""),
            address=fields.get("address"),
            requester=(session.fhir_user or "").removeprefix(own_base),
            write_back=registration.issuer if registration else None,
        )
    except (RequestInvalid, FhirError):
        return message(request, *REQUEST_REFUSED, 422)
    return RedirectResponse("/app/clinician#requests", status_code=303, headers=page_headers(state.settings))


@router.post("/clinician/requests/{task_id}/cancel")
async def cancel_request(task_id: str, request: Request) -> Response:
    session, _, refused = await _clinician_form(request)
    if refused is not None or session is None:
        return refused or message(request, *NOT_OPEN, 403)
    try:
        check_id(task_id)
        await run_in_threadpool(withdraw_request, request.app.state.fhir, session.patient or "", task_id)
    except (TaskRefused, FhirError):
        return message(request, *REQUEST_CLOSED, 409)
    headers = page_headers(request.app.state.settings)
    return RedirectResponse("/app/clinician#requests", status_code=303, headers=headers)

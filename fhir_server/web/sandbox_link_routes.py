"""The sandbox sends a form link to a demo client (``POST /sandbox/send-link``): a Task asking for the measure, as
an EHR would create it, which makes the link and queues its message; the message lands in the sandbox mailbox
(``/sandbox/mailbox``), where the link can be opened as the client would.  Only with ``FHIR_SERVER_SANDBOX=true``.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.clinician.instruments import choosable
from fhir_server.errors import FhirError
from fhir_server.i18n.app_texts import N_
from fhir_server.measure_tasks.tasks import new_request
from fhir_server.smart.sandbox import DEMO_CLINICIAN, PATIENTS
from fhir_server.web.form_pages import message, page_headers, read_form
from fhir_server.web.sandbox_routes import CSRF_COOKIE, _origin

router = APIRouter(include_in_schema=False)
MAILBOX = "/sandbox/mailbox"


def _send(request: Request, patient: str, measure: str, channel: str, origin: str) -> None:
    fhir = request.app.state.fhir
    links = request.app.state.form_links
    links.learned_base = links.learned_base or origin  # a sandbox run on its own: links point where it was opened
    first = patient.removeprefix("sandbox-")
    task = new_request(
        patient=patient,
        questionnaire=request.app.state.rating_form.resolve_measure(measure),
        requester=DEMO_CLINICIAN,
        days=request.app.state.settings.task_days,
        channel=channel,
        address=f"{first}@example.org" if channel == "email" else "+15555550100",
        write_back=f"{origin}/fhir",
    )

    def work(write: Any) -> None:
        fhir.create(write, "Task", task)

    fhir.repo.write(work)


@router.post("/sandbox/send-link")
async def send_link(request: Request) -> Response:
    fields = await read_form(request)
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf_token", "").encode()):
        return message(
            request, N_("This page was out of date"), N_("Nothing was sent. Please reload the sandbox."), 403
        )
    patient, measure = fields.get("patient", ""), fields.get("measure", "")
    channel = fields.get("channel", "email")
    known = patient in {p.id for p in PATIENTS} and measure in choosable(request.app.state.fhir.library)
    if not known or channel not in ("email", "sms"):
        return message(request, N_("Unknown choice"), N_("Pick one of the demo clients and a measure."), 400)
    origin = _origin(request)
    await run_in_threadpool(request.app.state.sandbox.ensure, origin)
    try:
        await run_in_threadpool(_send, request, patient, measure, channel, origin)
    except FhirError as exc:
        return message(request, N_("The link was not sent"), N_("%(reason)s"), exc.status, reason=str(exc))
    return RedirectResponse(MAILBOX, status_code=303, headers=page_headers(request.app.state.settings))

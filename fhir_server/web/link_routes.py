"""A form link's HTTP side (the work is outreach/links.py's).

``GET /app/l/{token}``   what the link opens: the identity check (or a Start button), or why it no longer opens
``POST /app/l/{token}``  the answer to the identity check: right → the link is used up, an app session starts and
                         the browser goes on to ``/app/form``; wrong → the page again; too many → 429

The token is the only secret and sits in the path: pages carry ``Referrer-Policy: no-referrer`` (form_pages), are
never cached or indexed, and nothing on them names the client or the measure before the check is passed.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from fhir_server.config import Settings
from fhir_server.i18n import negotiate
from fhir_server.i18n.app_texts import N_
from fhir_server.outreach.links import LINK_PATH, LinkService, LinkState
from fhir_server.outreach.messages import KINDS, LinkMessages
from fhir_server.web.app_cookies import set_session_cookie
from fhir_server.web.form_pages import BodyTooLarge, message, page_headers, page_templates, read_form, render

router = APIRouter(include_in_schema=False)

REFUSALS = {
    "unknown": (
        N_("This link does not work"),
        N_("Please check that the whole link was copied, or ask your care team for a new one."),
        404,
    ),
    "used": (
        N_("This link has been used"),
        N_("Each link opens the questionnaire once. If you could not finish, your care team can send a new one."),
        410,
    ),
    "expired": (N_("This link has expired"), N_("Your care team can send you a new one if it is still needed."), 410),
    "closed": (N_("Nothing to fill in"), N_("This questionnaire is no longer needed. Thank you."), 410),
}
LOCKED = (N_("Too many attempts"), N_("Please wait %(minutes)s minutes before you try again."))
FORM_PATH = "/app/form"


def _links(request: Request) -> LinkService:
    return request.app.state.form_links


def _language(request: Request, state: LinkState) -> str:
    """The link's language (the Task's, or the client's preferred), else the browser's."""
    chosen = state.link.get("language") if state.link else None
    request.state.app_language = chosen
    return negotiate(
        page_templates(request).catalogues.languages, chosen=chosen, accept=request.headers.get("accept-language")
    )


def _page(request: Request, token: str, state: LinkState, *, wrong: bool = False) -> Response:
    language = _language(request, state)
    if state.status == "locked":
        minutes = max(1, (state.retry_after + 59) // 60)
        response = message(request, *LOCKED, 429, minutes=minutes)
        response.headers["Retry-After"] = str(state.retry_after)
        return _noindex(response)
    if state.status in REFUSALS:
        return _noindex(message(request, *REFUSALS[state.status]))
    context = {"action": f"{LINK_PATH}{token}", "asks_identity": _links(request).asks_identity, "wrong": wrong}
    return _noindex(render(request, "link.html", context, 422 if wrong else 200, language))


def _noindex(response: Response) -> Response:
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@router.get(LINK_PATH + "{token}")
async def show_link(request: Request, token: str) -> Response:
    state = await run_in_threadpool(_links(request).inspect, token)
    return _page(request, token, state)


@router.post(LINK_PATH + "{token}")
async def open_link(request: Request, token: str) -> Response:
    try:
        fields = await read_form(request)
    except BodyTooLarge:
        fields = {}
    address = request.client.host if request.client else None
    state, session_id = await run_in_threadpool(_links(request).open, token, fields.get("birth_year"), address)
    if session_id is None:
        return _page(request, token, state, wrong=state.status == "wrong")
    settings = request.app.state.settings
    response = RedirectResponse(FORM_PATH, status_code=303, headers=page_headers(settings))
    set_session_cookie(response, session_id, settings.app_session_seconds)
    return response


def install_links(app: FastAPI, settings: Settings) -> None:
    """Form links: the service (a write hook of the engine: a Task asking for a link gets one), its messages'
    renderers on the message worker, the link pages, and the sandbox's "send a link".  Needs app.state.fhir,
    .app_sessions, .catalogues and .message_worker."""
    state = app.state
    links = LinkService(
        state.fhir.repo, state.fhir.library, settings, state.app_sessions, lambda: state.catalogues.languages
    )
    links.wake = state.message_worker.wake
    state.form_links = links
    state.fhir.write_hooks.append(links.on_written)
    words = LinkMessages(links, state.catalogues)
    for kind in KINDS:
        state.message_worker.register_renderer(kind, words.render)
    app.include_router(router)
    if settings.sandbox:
        from fhir_server.web import sandbox_link_routes

        app.include_router(sandbox_link_routes.router)

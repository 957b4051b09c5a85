"""Pages of the rating form: templates, the headers every /app page carries, and bounded body reading.

Headers: a Content-Security-Policy that loads only our own script and style sheet (no inline script, no CDN),
lets the script talk only to this server, and lets the page be framed only by this server and the EHR origins in
FHIR_SERVER_FRAME_ANCESTORS (the form runs in EHR iframes); ``Cache-Control: no-store`` because the pages hold a
client's answers; no referrer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from fhir_server import __version__
from fhir_server.config import Settings

WEB = Path(__file__).parent
templates = Jinja2Templates(directory=WEB / "templates")
MAX_FORM_BYTES = 64 * 1024  # a form of a few dozen answers is a few KB


class BodyTooLarge(Exception):
    pass


def page_headers(settings: Settings) -> dict[str, str]:
    ancestors = " ".join(["'self'", *settings.frame_ancestors])
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    form = context.get("form")
    lang = form.questionnaire.get("language") if form is not None else None  # the Questionnaire's language
    response = templates.TemplateResponse(
        request, f"app/{template}", {"version": __version__, "lang": lang, **context}, status_code=status
    )
    response.headers.update(page_headers(request.app.state.settings))
    return response


def message(request: Request, title: str, text: str, status: int) -> Response:
    """A plain page that says what happened and what to do; nothing is written."""
    return render(request, "message.html", {"title": title, "text": text}, status)


async def read_body(request: Request, limit: int = MAX_FORM_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


async def read_form(request: Request) -> dict[str, str]:
    """application/x-www-form-urlencoded, bounded; the last value wins for a repeated name (radio groups send
    one)."""
    body = await read_body(request)
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))

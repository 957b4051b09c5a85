"""The sandbox mailbox (``/sandbox/mailbox``, only with FHIR_SERVER_SANDBOX=true): the email and SMS the server
would have sent, captured as files (messaging/mailbox.py) because the sandbox has no SMTP server or SMS gateway.
It shows what a client receives, with the form links it carries.

Shown safely: every value is autoescaped; only the plain-text part of an email is shown (never its HTML); a link
is clickable only when it points at this server's own origin, others are shown as text, so a captured message
cannot send the sandbox user anywhere else."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.auth import urls
from fhir_server.messaging.mailbox import captured, mailbox_folder, read_captured
from fhir_server.web.form_pages import page_headers

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")  # autoescape on for .html
LINK = re.compile(r"https?://[^\s<>\"')\]]+")


def _render(request: Request, template: str, context: dict[str, object], status: int = 200) -> Response:
    response = templates.TemplateResponse(request, f"sandbox/{template}", context, status_code=status)
    response.headers.update(page_headers(request.app.state.settings))
    return response


def links(text: str, origin: str) -> list[tuple[str, bool]]:
    """The URLs in a message's text, each with whether it may be a link: only this server's own origin."""
    own = urlsplit(origin)
    found = []
    for url in dict.fromkeys(m.group(0).rstrip(".,;:!?") for m in LINK.finditer(text)):
        parts = urlsplit(url)
        found.append((url, (parts.scheme, parts.netloc) == (own.scheme, own.netloc)))
    return found


@router.get("/sandbox/mailbox")
async def mailbox(request: Request) -> Response:
    folder = mailbox_folder(request.app.state.settings)
    messages = await run_in_threadpool(captured, folder)
    return _render(request, "mailbox.html", {"messages": messages, "folder": str(folder)})


@router.get("/sandbox/mailbox/{name}")
async def mailbox_message(request: Request, name: str) -> Response:
    settings = request.app.state.settings
    message = await run_in_threadpool(read_captured, mailbox_folder(settings), name)
    if message is None:
        return _render(request, "mailbox_missing.html", {}, 404)
    origin = urls.origin(settings, str(request.base_url))
    return _render(request, "mailbox_message.html", {"message": message, "links": links(message.text, origin)})

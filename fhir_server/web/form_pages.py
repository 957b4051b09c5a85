"""Pages of the rating form: templates, the headers every /app page carries, and bounded body reading.

Languages: every page renders in one language (``page_language``): the app session's when a route has loaded one
(``remember_language``), else the browser's ``Accept-Language`` among the app catalogue's languages.  Each language
has its own Jinja2 environment with ``jinja2.ext.i18n``'s gettext callables installed once from
``Catalogues.translator(language, "app")`` (newstyle: ``_("… %(name)s", name=x)`` escapes ``x`` and cannot be
mis-formatted).  Installing the callables per request on one shared environment would race between concurrent
requests (they are the environment's globals), so the per-request choice is which environment renders.

Headers: a Content-Security-Policy that loads only our own script and style sheet (no inline script, no CDN),
lets the script talk only to this server, and lets the page be framed only by this server and the EHR origins in
FHIR_SERVER_FRAME_ANCESTORS (the form runs in EHR iframes); ``Cache-Control: no-store`` because the pages hold a
client's answers; no referrer.
"""

from __future__ import annotations

import threading
from gettext import NullTranslations
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from fhir_server import __version__
from fhir_server.config import Settings
from fhir_server.i18n import Catalogues, direction, negotiate
from fhir_server.smart.sessions import AppSession

WEB = Path(__file__).parent
TEMPLATES = WEB / "templates"
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


class PageTemplates:
    """The app's templates in every language of ``catalogues``, one Jinja2 environment each (made on first use)."""

    def __init__(self, catalogues: Catalogues) -> None:
        self.catalogues = catalogues
        self._by_language: dict[str, Jinja2Templates] = {}
        self._lock = threading.Lock()

    def translator(self, language: str) -> NullTranslations:
        return self.catalogues.translator(language, "app")

    def for_language(self, language: str) -> Jinja2Templates:
        found = self._by_language.get(language)
        if found is None:
            with self._lock:
                found = self._by_language.get(language) or self._make(language)
                self._by_language[language] = found
        return found

    def _make(self, language: str) -> Jinja2Templates:
        return templates_in(self.translator(language))


def templates_in(translator: NullTranslations) -> Jinja2Templates:
    """The app's templates with one language's gettext callables installed (newstyle)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(translator.gettext, translator.ngettext, newstyle=True)  # type: ignore[attr-defined]
    return Jinja2Templates(env=env)


templates = templates_in(NullTranslations())  # English (the msgids), for code and tests that render a template directly


def page_templates(request: Request) -> PageTemplates:
    return request.app.state.page_templates


def remember_language(request: Request, session: AppSession | None) -> AppSession | None:
    """The session's language is the language of every page this request renders (returns the session)."""
    request.state.app_language = session.language if session is not None else None
    return session


def page_language(request: Request) -> str:
    """The session's language when the route loaded a session (``remember_language``) and the app speaks it, else
    the browser's ``Accept-Language``, else English."""
    chosen = getattr(request.state, "app_language", None)
    available = page_templates(request).catalogues.languages
    return negotiate(available, chosen=chosen, accept=request.headers.get("accept-language"))


def translator(request: Request, language: str | None = None) -> NullTranslations:
    """gettext for Python code that builds a page's text (``translator(request).gettext(N_("…"))``)."""
    return page_templates(request).translator(language or page_language(request))


def render(
    request: Request, template: str, context: dict[str, Any], status: int = 200, language: str | None = None
) -> Response:
    """``language``: the form's own (negotiated with what its Questionnaire offers); other pages leave it out."""
    language = language or page_language(request)
    base = {"version": __version__, "lang": language, "dir": direction(language)}
    response = (
        page_templates(request)
        .for_language(language)
        .TemplateResponse(request, f"app/{template}", {**base, **context}, status_code=status)
    )
    response.headers.update(page_headers(request.app.state.settings))
    return response


def message(request: Request, title: str, text: str, status: int, **params: Any) -> Response:
    """A plain page that says what happened and what to do; nothing is written.  ``title`` and ``text`` are the
    English msgids (marked ``N_()`` where they are defined), translated here; ``params`` fill their
    ``%(name)s`` placeholders after translation."""
    language = page_language(request)
    gettext = page_templates(request).translator(language).gettext
    title, text = gettext(title), gettext(text)
    if params:
        text = text % params
    return render(request, "message.html", {"title": title, "text": text}, status, language)


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

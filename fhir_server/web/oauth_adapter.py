"""The one adapter between Starlette requests/responses and authlib's framework-free server (auth/server.py).

Inbound: parameters from the query (GET /auth/authorize) or an ``application/x-www-form-urlencoded`` body (size
capped, UTF-8, each parameter at most once as RFC 6749 §3.1 and §3.2 require) become a FormRequest that knows
where this server is.  Outbound: authlib's (status, body, headers) becomes a JSON response; failures of these
endpoints are always OAuth2 JSON errors (``{"error": ..., "error_description": ...}``), never an
OperationOutcome or a stack trace.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from authlib.oauth2.base import OAuth2Error
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.auth import urls
from fhir_server.auth.oauth_request import FormRequest, Site
from fhir_server.config import Settings

MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BadRequest(Exception):
    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description, self.status = description, status


def site_of(request: Request, settings: Settings) -> Site:
    base = str(request.base_url)
    return Site(
        origin=urls.origin(settings, base),
        issuer=urls.issuer(settings, base),
        fhir_base=urls.fhir_base(settings, base),
        audiences=tuple(urls.audiences(settings, base)),
    )


async def read_body(request: Request, limit: int) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"The request body is larger than {limit} bytes", 413)
    return body


async def form_params(request: Request) -> list[tuple[str, str]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise BadRequest(f"The body must be {FORM_TYPE}", 400)
    try:
        text = (await read_body(request, MAX_FORM_BYTES)).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8") from None
    return _parse(text)


def query_params(request: Request) -> list[tuple[str, str]]:
    return _parse(request.url.query)


def _parse(text: str) -> list[tuple[str, str]]:
    try:
        params = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadRequest("Too many parameters") from None
    names = [k for k, _ in params]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadRequest(f"Parameters may appear only once: {', '.join(repeated)[:100]}")
    for name, value in params:
        # OAuth parameters are printable ASCII (RFC 6749 Appendix A); authlib also refuses to put quotes or
        # backslashes into an error description, and some of its descriptions quote the request.
        allowed = (
            value.isascii() and value.isprintable() and (name == "state" or ('"' not in value and "\\" not in value))
        )
        if not allowed and name not in ("password", "username"):
            raise BadRequest(f"Parameter {name[:40]} holds characters OAuth does not allow")
    return params


def oauth_request(request: Request, settings: Settings, params: list[tuple[str, str]]) -> FormRequest:
    """Raises authlib's InsecureTransportError for plain http to anything but a loopback address."""
    site = site_of(request, settings)
    return FormRequest(request.method, f"{site.origin}{request.url.path}", list(request.headers.items()), params, site)


async def read_oauth_request(request: Request, settings: Settings) -> FormRequest:
    """A token/introspection/revocation request (form body).  Raises BadRequest or authlib's OAuth2Error."""
    return oauth_request(request, settings, await form_params(request))


def answer(result: tuple[int, Any, list[tuple[str, str]]]) -> Response:
    status, body, headers = result
    content = orjson.dumps(body) if isinstance(body, dict | list) else (body or b"")
    response = Response(content, status_code=status, media_type="application/json")
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers.append(name, value)
    return response


def error_response(error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": error, "error_description": description})
    return Response(body, status_code=status, media_type="application/json", headers={**NO_STORE, **(headers or {})})


def oauth_error_response(error: OAuth2Error) -> Response:
    status, body, headers = error()
    return answer((status, body, headers))

"""HTTP plumbing shared by the handlers: body limits, content negotiation, Prefer, and response building."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import Request
from starlette.datastructures import URL
from starlette.responses import Response
from starlette.types import Scope

from fhir_server import fhirjson
from fhir_server.config import Settings
from fhir_server.errors import FHIR_JSON, FhirError, info_outcome
from fhir_server.store.records import Stored

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
PATCH_TYPE = "application/json-patch+json"
_FORMAT_ALIASES = {
    "json": FHIR_JSON,
    "application/json": "application/json",
    "application/fhir+json": FHIR_JSON,
}
_XML = (
    "xml",
    "application/xml",
    "application/fhir+xml",
    "text/xml",
    "ttl",
    "application/fhir+turtle",
    "html",
)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def base_url(request: Request) -> str:
    configured = settings_of(request).base_url
    if configured:
        return configured.rstrip("/")
    return request_origin(request) + "/fhir"


def request_origin(request: Request) -> str:
    """The request's own scheme://host[:port], ``str(request.base_url)`` without its slash (the server is never
    mounted under a root path), at a dict look-up's cost instead of a URL parse (~40 µs) per request."""
    scope = request.scope
    host = next((value for key, value in scope["headers"] if key == b"host"), None)
    server = scope.get("server")
    return _origin(scope.get("scheme", "http"), host, tuple(server) if server else None)


def request_target(scope: Scope) -> str:
    """path?query of the request, for the audit record of a search: ``request.url``'s spelling (a ``?`` or ``#``
    inside the path escaped) without building the URL."""
    path = scope["path"].replace("?", "%3F").replace("#", "%23")
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('utf-8', 'replace')}" if query else path


@lru_cache(maxsize=128)
def _origin(scheme: str, host: bytes | None, server: tuple[str, int] | None) -> str:
    """scheme://host[:port] as Starlette derives it from a request (its checks of the Host header included),
    worked out once per Host: every write answers with a Location, and parsing the URL each time showed."""
    url = URL(scope={"scheme": scheme, "server": server, "path": "", "headers": [(b"host", host)] if host else []})
    return f"{url.scheme}://{url.netloc}"


def response_media_type(request: Request) -> str:
    """Pick the response type from ``_format`` or ``Accept``; XML, Turtle and anything else → 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        chosen = _FORMAT_ALIASES.get(fmt.split(";")[0].strip())
        if chosen is None:
            raise FhirError(406, "not-supported", f"_format '{fmt[:40]}' is not supported; this server speaks JSON")
        return chosen
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return FHIR_JSON
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/fhir+json", "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if media == "application/json":
            return "application/json"
    raise FhirError(406, "not-supported", f"Cannot answer in '{accept[:60]}'; this server speaks application/fhir+json")


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 before parsing when it exceeds the configured limit."""
    limit = settings_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-long", f"The body exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(413, "too-long", f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, allowed: tuple[str, ...] = JSON_TYPES) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise FhirError(
            415,
            "not-supported",
            f"Content-Type '{content_type[:60] or '(none)'}' is not supported; use {allowed[0]}",
        )
    body = await read_body(request)
    if not body.strip():
        raise FhirError(400, "structure", "The request body is empty")
    return fhirjson.parse(body)


def prefer_return(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return "representation"


def prefer_strict(request: Request) -> bool:
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


def json_response(request: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    pretty = request.query_params.get("_pretty") == "true"
    if isinstance(body, str | bytes):
        content = body.encode() if isinstance(body, str) else body
        if pretty:
            content = fhirjson.pretty(content)
    else:
        content = fhirjson.dumps(body, pretty=pretty)
    return Response(content, status_code=status, media_type=response_media_type(request), headers=headers)


def version_headers(stored: Stored, request: Request, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": stored.etag, "Last-Modified": stored.http_date}
    if location:
        headers["Location"] = f"{base_url(request)}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return headers


def write_response(
    request: Request,
    stored: Stored,
    status: int,
    *,
    message: str,
    notes: tuple[str, ...] = (),
    warnings: tuple[dict[str, Any], ...] = (),
) -> Response:
    """Answer a create/update/patch honouring ``Prefer: return=``; ``notes`` become informational issues of the
    OperationOutcome (``return=OperationOutcome``), the validator's ``warnings`` warning ones."""
    headers = version_headers(stored, request, location=status == 201 or request.method == "POST")
    preference = prefer_return(request)
    if preference == "minimal":
        return Response(status_code=status, headers=headers)
    if preference == "OperationOutcome":
        outcome = info_outcome(message)
        outcome["issue"] += [{"severity": "information", "code": "informational", "diagnostics": n} for n in notes]
        outcome["issue"] += list(warnings)
        return json_response(request, outcome, status, headers)
    return json_response(request, stored.content or "{}", status, headers)

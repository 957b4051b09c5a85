"""Binary on the REST API (R4 binary.html, "Serving Binary Resources using the RESTful API").

- A read or vread answers the content itself, with the Binary's ``contentType`` as its Content-Type, unless FHIR
  is asked for: ``_format`` (always a FHIR format, even when a generic type is given) or a FHIR type in ``Accept``
  (``application/json`` is one here, as for every resource).  No ``Accept``, ``*/*`` or any other type: the content.
- A create or update whose Content-Type is not FHIR stores the body as the content of a Binary (``contentType``
  from the header, ``X-Security-Context`` as ``securityContext.reference``); a Binary resource in FHIR JSON is
  stored as any resource.  ``application/json`` is a Binary resource when it is one, and content otherwise.

The resource goes through the same interactions as every other (access policy, audit, validation, the request
size limit); only the HTTP representation differs.  Raw content never runs in this server's origin: it is served
with ``nosniff``, a sandboxing Content-Security-Policy, and as an attachment unless it is plain text or an image
format a browser only displays (docs/security.md, "Binary content").
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from fhir_server import fhirjson
from fhir_server.api.http import read_body, read_json
from fhir_server.errors import FhirError
from fhir_server.store.records import Stored

FHIR_TYPES = frozenset(
    {
        "application/fhir+json",
        "application/json+fhir",
        "application/json",
        "application/fhir+xml",
        "application/xml+fhir",
    }
)
# Content a browser shows without running anything in it; everything else is downloaded (Content-Disposition).
INLINE = frozenset({"text/plain", "image/png", "image/jpeg", "image/gif", "image/webp"})
# Scripts, plugins, forms and same-origin access are off even if a browser renders the content anyway.
SANDBOX = "sandbox; default-src 'none'"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_QUOTED = re.compile(r'"[^"\\\x00-\x1f\x7f]*"')
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")  # a reference as a header value: visible ASCII, no space


def media_type(value: str) -> str | None:
    """``type/subtype[; name=value]...`` normalised, or None when ``value`` is not a media type (RFC 9110 §8.3.1):
    nothing that is not one reaches a stored contentType or a response header."""
    main, *parameters = value.split(";")
    kind, slash, subtype = main.strip().partition("/")
    if not slash or not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(subtype):
        return None
    out = [f"{kind.lower()}/{subtype.lower()}"]
    for parameter in parameters:
        name, equals, text = parameter.strip().partition("=")
        if not equals or not _TOKEN.fullmatch(name) or not (_TOKEN.fullmatch(text) or _QUOTED.fullmatch(text)):
            return None
        out.append(f"{name.lower()}={text}")
    return "; ".join(out)


def wants_content(request: Request, resource_type: str) -> bool:
    """Whether a read answers the Binary's content rather than the Binary resource."""
    if resource_type != "Binary" or "_format" in request.query_params:
        return False
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")}
    return not accepted & FHIR_TYPES


def content_response(stored: Stored, headers: dict[str, str]) -> Response:
    """The Binary's content as the body, its contentType as the Content-Type (``headers``: ETag, Last-Modified)."""
    resource = fhirjson.loads_stored(stored.content or "{}")
    content_type = media_type(str(resource.get("contentType", ""))) or "application/octet-stream"
    out = {
        **headers,
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX,
    }
    if content_type.split(";")[0] not in INLINE:
        out["Content-Disposition"] = "attachment"
    context = (resource.get("securityContext") or {}).get("reference")
    if isinstance(context, str) and _HEADER_VALUE.fullmatch(context):
        out["X-Security-Context"] = context
    # validated as base64 when it was written; whitespace the R4 syntax allows is skipped
    return Response(base64.b64decode(resource.get("data", "")), headers=out)


async def read_resource(request: Request, resource_type: str, resource_id: str | None = None) -> Any:
    """The resource a create or update sends: FHIR JSON, or for a Binary also its content itself."""
    if resource_type != "Binary":
        return await read_json(request)
    header = request.headers.get("content-type", "")
    main = header.split(";")[0].strip().lower()
    if not main:
        raise FhirError(
            415,
            "not-supported",
            "Content-Type is missing: send the content with its own media type (it becomes the Binary's "
            "contentType), or a Binary resource as application/fhir+json",
        )
    if main in FHIR_TYPES - {"application/json"}:
        return await read_json(request)  # a Binary resource (FHIR XML: 415, as for every resource)
    body = await read_body(request)
    if main == "application/json" and _is_binary_resource(body):
        return fhirjson.parse(body)
    return _binary(request, header, body, resource_id)


def _is_binary_resource(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("resourceType") == "Binary"


def _binary(request: Request, header: str, body: bytes, resource_id: str | None) -> dict[str, Any]:
    content_type = media_type(header)
    if content_type is None:
        raise FhirError(400, "value", f"Content-Type '{header[:60]}' is not a media type")
    if not body:
        raise FhirError(400, "required", "The request body is empty: a Binary needs content")
    resource: dict[str, Any] = {"resourceType": "Binary"}
    if resource_id is not None:
        resource["id"] = resource_id
    resource["contentType"] = content_type
    context = request.headers.get("x-security-context")
    if context is not None:  # an empty or malformed one is refused by the validator, naming the element
        resource["securityContext"] = {"reference": context.strip()}
    resource["data"] = base64.b64encode(body).decode("ascii")
    return resource

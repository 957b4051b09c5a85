"""History for an instance, a type or the whole system: ``_since``, ``_at``, ``_count`` and keyset paging."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from starlette.responses import Response

from fhir_server.api import result_bundles
from fhir_server.api.http import json_response, response_media_type
from fhir_server.engine.interactions import Interactions
from fhir_server.errors import FhirError
from fhir_server.search.fhirdate import DateFormatError, parse_range
from fhir_server.store.search_sql import decode_cursor, encode_cursor


def _instant_param(request: Request, name: str) -> tuple[datetime, datetime] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_range(raw)
    except DateFormatError as exc:
        raise FhirError(400, "value", f"Invalid {name}: {exc}", expression=[name]) from None


def respond(
    request: Request, fhir: Interactions, *, resource_type: str | None = None, resource_id: str | None = None
) -> Response:
    response_media_type(request)
    params = list(request.query_params.multi_items())
    settings = fhir.settings
    raw_count = request.query_params.get("_count", str(settings.default_page_size))
    if not raw_count.isdigit():
        raise FhirError(400, "value", "_count must be a non-negative integer", expression=["_count"])
    count = min(int(raw_count), settings.max_page_size)
    since = _instant_param(request, "_since")
    at = _instant_param(request, "_at")
    cursor = fhir.policy.unseal(request.query_params.get("_cursor"))
    before = None
    if cursor:
        values, _ = decode_cursor(cursor)
        if len(values) != 1 or not isinstance(values[0], int):
            raise FhirError(400, "value", "The paging cursor is invalid")
        before = values[0]
    rows = fhir.history(
        resource_type=resource_type,
        resource_id=resource_id,
        since=since[0] if since else None,
        at=at,
        before_history_id=before,
        count=count + 1,
    )
    next_cursor = fhir.policy.seal(encode_cursor([rows[count - 1][0]])) if len(rows) > count and count > 0 else None
    path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
    return json_response(request, result_bundles.history(request, path, params, rows[:count], next_cursor))

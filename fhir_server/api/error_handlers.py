"""FhirError as HTTP: the OperationOutcome response, the app's exception handlers, and the last-resort 500 (with a
request id to quote) or 503 (a database outage).  errors.py stays free of HTTP so every layer can raise."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from fhir_server.errors import FHIR_JSON, FhirError
from fhir_server.store.errors import classify_database_error

log = logging.getLogger("fhir_server")


def outcome_response(err: FhirError) -> Response:
    return Response(
        content=orjson.dumps(err.outcome()),
        status_code=err.status,
        media_type=FHIR_JSON,
        headers=err.headers,
    )


_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


def install_error_handlers(app: FastAPI, database_errors: tuple[type[Exception], ...] = ()) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(_: Request, exc: FhirError) -> Response:
        return outcome_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            detail = f"No route for {request.method} {request.url.path}"
            err = FhirError(404, "not-found", detail)
        elif exc.status_code == 405:
            detail = f"{request.method} is not supported on {request.url.path}"
            err = FhirError(405, "not-supported", detail)
        else:
            err = FhirError(exc.status_code, _STATUS_CODES.get(exc.status_code, "processing"), str(exc.detail))
        return outcome_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return outcome_response(FhirError(400, "invalid", "; ".join(parts) or "Invalid request"))

    async def _database(request: Request, exc: Exception) -> Response:
        translated = translate_database_error(exc)
        if translated is not None:
            log.warning("database unavailable: %s", translated.issues[0].diagnostics)
            return outcome_response(translated)
        return _internal_error(request, exc)

    for error_class in database_errors:
        app.add_exception_handler(error_class, _database)

    # Anything else is caught by RequestContextMiddleware (see internal_error_response): handled there, the
    # connection stays usable, whereas Starlette's catch-all re-raises into the server after answering.


def _internal_error(request: Request, exc: Exception) -> Response:
    return internal_error_response(request.scope.get("state", {}).get("request_id", "-"), exc)


def internal_error_response(request_id: str, exc: BaseException) -> Response:
    """500 with a request id to quote, the details in the log only; a database outage is a 503 instead."""
    translated = translate_database_error(exc)
    if translated is not None:
        return outcome_response(translated)
    log.error("unhandled error (request %s)", request_id, exc_info=exc)
    return outcome_response(
        FhirError(500, "exception", f"Internal server error; quote request id {request_id} to the operator")
    )


def translate_database_error(exc: BaseException) -> FhirError | None:
    """Map a database outage or lock to 503 (store/ owns what counts as one)."""
    return classify_database_error(exc)

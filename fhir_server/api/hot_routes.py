"""The two most frequent FHIR requests, a read by id and a type search, offered to the router before any other.

FastAPI tries routes in order, and with routers included by ``include_router`` each candidate costs several
microseconds (its regex, plus the router's bookkeeping in the request scope); a read by id, the 25th candidate,
spent ~100 µs of its ~700 µs of Python in route matching (py-spy, bench/core.py's read).  These two routes come
first.  Their paths take FHIR's own syntax, a resource type that starts with a capital letter and an id of 1 to 64
``[A-Za-z0-9-.]``, so they never take another route's path (``/fhir/metadata``, ``/fhir/_history``,
``/fhir/.well-known/…``, ``/fhir/Patient/_search``, ``/fhir/Patient/$export``).  A path they do not match (a
malformed id, say) falls through to the generic routes in api/instance.py and api/type.py, which run the same
handlers and answer it as before.

Both handlers are blocking (the database), so they run off the event loop, on a thread pool of their own: anyio's
hand-off, which FastAPI uses for a plain ``def`` endpoint (a capacity limiter, a ``queue.Queue`` and its condition
per call), cost ~110 µs of CPU per call against ~45 µs for ``run_in_executor`` on a ``ThreadPoolExecutor`` (8
concurrent callers, a trivial function); the context (the request id the logs carry) goes along, as with anyio.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from starlette.convertors import CONVERTOR_TYPES, StringConvertor, register_url_convertor
from starlette.responses import Response

from fhir_server.api import instance
from fhir_server.api import type as type_api
from fhir_server.deps import FhirDep

# As many threads as anyio's default limiter lets plain endpoints use; the database pools bound the real work.
_THREADS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="fhir-hot")


class ResourceTypeConvertor(StringConvertor):
    """A resource type's spelling (R4 names are capitalised ASCII letters); whether it is one is the handler's
    question, answered with an OperationOutcome."""

    regex = "[A-Z][A-Za-z]{0,63}"


class ResourceIdConvertor(StringConvertor):
    """R4's id datatype, as validation/resource.ID_PATTERN checks it."""

    regex = r"[A-Za-z0-9\-.]{1,64}"


if "fhir_type" not in CONVERTOR_TYPES:
    register_url_convertor("fhir_type", ResourceTypeConvertor())
    register_url_convertor("fhir_id", ResourceIdConvertor())


def _off_the_loop(handler: Callable[[Request, FhirDep], Response]) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request, fhir: FhirDep) -> Response:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(_THREADS, context.run, handler, request, fhir)

    endpoint.__name__ = endpoint.__qualname__ = handler.__name__
    return endpoint


router = APIRouter()
router.add_api_route(
    "/{resource_type:fhir_type}/{resource_id:fhir_id}",
    _off_the_loop(instance.read),
    methods=["GET"],
    include_in_schema=False,
)
router.add_api_route(
    "/{resource_type:fhir_type}", _off_the_loop(type_api.search), methods=["GET"], include_in_schema=False
)

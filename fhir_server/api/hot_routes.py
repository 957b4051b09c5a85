"""The two most frequent FHIR requests, a read by id and a type search, offered to the router before any other.

FastAPI tries routes in order, and with routers included by ``include_router`` each candidate costs several
microseconds (its regex, plus the router's bookkeeping in the request scope); a read by id, the 25th candidate,
spent ~100 µs of its ~700 µs of Python in route matching (py-spy, bench/core.py's read).  These two routes come
first.  Their paths take FHIR's own syntax, a resource type that starts with a capital letter and an id of 1 to 64
``[A-Za-z0-9-.]``, so they never take another route's path (``/fhir/metadata``, ``/fhir/_history``,
``/fhir/.well-known/…``, ``/fhir/Patient/_search``, ``/fhir/Patient/$export``).  A path they do not match (a
malformed id, say) falls through to the generic routes in api/instance.py and api/type.py, which run the same
handlers and answer it as before.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.convertors import CONVERTOR_TYPES, StringConvertor, register_url_convertor

from fhir_server.api import instance
from fhir_server.api import type as type_api


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

router = APIRouter()
router.add_api_route(
    "/{resource_type:fhir_type}/{resource_id:fhir_id}", instance.read, methods=["GET"], include_in_schema=False
)
router.add_api_route("/{resource_type:fhir_type}", type_api.search, methods=["GET"], include_in_schema=False)

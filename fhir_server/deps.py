"""Annotated dependency aliases: handlers receive what they need instead of reaching for globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fhir_server.api.http import request_origin, request_target
from fhir_server.auth import urls
from fhir_server.auth.audit import OUTCOME_MINOR_FAILURE, Access
from fhir_server.auth.caller import Caller
from fhir_server.auth.guard import GuardedInteractions
from fhir_server.auth.tokens import TokenError
from fhir_server.engine.interactions import Interactions
from fhir_server.errors import FhirError

_UNRESTRICTED = Caller.unrestricted()


# async on purpose: FastAPI runs plain-def dependencies in the thread pool, a hop per request for a getattr.
async def _caller(request: Request) -> Caller:
    """The bearer token's caller; 401 with WWW-Authenticate (and an audit record) when there is none."""
    state = request.app.state
    settings = state.settings
    if not settings.auth_required:
        return _UNRESTRICTED
    request_base = request_origin(request)
    header = request.headers.get("authorization")
    own_issuer, audiences = urls.issuer(settings, request_base), urls.audiences(settings, request_base)
    known = state.bearer.cached(header, own_issuer=own_issuer, audiences=audiences)
    if known is not None:
        return known
    try:
        # Off the event loop: the key store, the revocation list and an EHR's JWKS may need I/O.
        return await run_in_threadpool(
            state.bearer.authenticate,
            header,
            own_issuer=own_issuer,
            audiences=audiences,
        )
    except TokenError as err:
        client = request.client.host if request.client else None
        state.audit.record(None, Access("login", OUTCOME_MINOR_FAILURE, str(err), client_address=client))
        challenge = 'Bearer realm="fhir"' if not header else 'Bearer realm="fhir", error="invalid_token"'
        raise FhirError(401, err.code, str(err), headers={"WWW-Authenticate": challenge}) from None


async def _fhir(request: Request, caller: Annotated[Caller, Depends(_caller)]) -> Interactions:
    state = request.app.state
    client = request.client.host if request.client else None
    if not caller.authenticated:
        return state.fhir.for_reader(_reader(caller, client))
    target = request_target(request.scope)
    guarded = GuardedInteractions.bind(state.fhir, caller, state.access, state.audit, client, target)
    return guarded.for_reader(_reader(caller, client))


def _reader(caller: Caller, client: str | None) -> str:
    """Who reads their own writes from a read replica (store/replica.py): the token's client and user, whatever
    the token (a refreshed token is the same reader).  With authorization off there is no identity: the client's
    address (middleware.TrustedProxyHeaders), so clients behind one untrusted proxy share one, which only sends
    them to the primary more often."""
    if caller.authenticated:
        return f"token {caller.issuer}|{caller.client_id}|{caller.subject}"
    return f"address {client}"


async def _public_fhir(request: Request) -> Interactions:
    """For the few endpoints anyone may call (the CapabilityStatement)."""
    return request.app.state.fhir


CallerDep = Annotated[Caller, Depends(_caller)]
FhirDep = Annotated[Interactions, Depends(_fhir)]
PublicFhirDep = Annotated[Interactions, Depends(_public_fhir)]

"""Annotated dependency aliases: handlers receive what they need instead of reaching for globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_server.api.interactions import Interactions


# async on purpose: FastAPI runs plain-def dependencies in the thread pool, a hop per request for a getattr.
async def _fhir(request: Request) -> Interactions:
    return request.app.state.fhir


FhirDep = Annotated[Interactions, Depends(_fhir)]

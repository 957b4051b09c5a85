"""Annotated dependency aliases: handlers receive what they need instead of reaching for globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_server.api.interactions import Interactions
from fhir_server.config import Settings


# async on purpose: FastAPI runs plain-def dependencies in the thread pool, a hop per request for a getattr.
async def _fhir(request: Request) -> Interactions:
    return request.app.state.fhir


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


FhirDep = Annotated[Interactions, Depends(_fhir)]
SettingsDep = Annotated[Settings, Depends(_settings)]

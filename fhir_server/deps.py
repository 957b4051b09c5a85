"""Annotated dependency aliases: handlers receive what they need instead of reaching for globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_server.api.interactions import Interactions
from fhir_server.config import Settings


def _fhir(request: Request) -> Interactions:
    return request.app.state.fhir


def _settings(request: Request) -> Settings:
    return request.app.state.settings


FhirDep = Annotated[Interactions, Depends(_fhir)]
SettingsDep = Annotated[Settings, Depends(_settings)]

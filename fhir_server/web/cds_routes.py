"""CDS Hooks 2.0 endpoints: discovery, the services, and card feedback.  Thin: verify the EHR's JWT, gather the
data (prefetch, or fhirAuthorization at a FHIR base registered for that JWT's issuer), build the summary once,
turn it into cards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_server.api.http import read_json
from fhir_server.auth import urls
from fhir_server.auth.tokens import TokenError
from fhir_server.cds_hooks.cards import build_cards
from fhir_server.cds_hooks.data import gather
from fhir_server.cds_hooks.measures import (
    alliance_flag_codes,
    collected_today,
    for_client,
    gap_margins,
    start_measures,
)
from fhir_server.cds_hooks.request_card import request_cards
from fhir_server.cds_hooks.services import SERVICES, Service
from fhir_server.errors import FhirError
from fhir_server.scoring.summary import build_summary
from fhir_server.store import cds_store

router = APIRouter(prefix="/cds-services")
JSON_BODY = ("application/json", "application/fhir+json")


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


@router.get("")
def discovery() -> Response:
    return _json({"services": [service.discovery() for service in SERVICES.values()]})


def _service(service_id: str) -> Service:
    service = SERVICES.get(service_id)
    if service is None:
        raise FhirError(404, "not-found", f"No CDS service '{service_id[:64]}' here; see GET /cds-services")
    return service


async def _verify(request: Request, service: Service, endpoint: str = "") -> dict[str, Any]:
    """The caller's JWT.  Its ``aud`` is "the CDS Service endpoint that is being called" (CDS Hooks 2.0): for
    feedback the feedback URL; the service's own URL and the discovery base are accepted as well, as clients
    that sign every call for the service (and this server before) send them."""
    origin = urls.origin(request.app.state.settings, str(request.base_url))
    audiences = [f"{origin}/cds-services/{service.id}", f"{origin}/cds-services"]
    if endpoint:
        audiences.insert(0, f"{origin}/cds-services/{service.id}/{endpoint}")
    try:
        return await run_in_threadpool(
            request.app.state.cds_verifier.verify, request.headers.get("authorization"), audiences
        )
    except TokenError as err:
        raise FhirError(401, err.code, str(err), headers={"WWW-Authenticate": 'Bearer realm="cds-services"'}) from None


@router.post("/{service_id}")
async def call_service(service_id: str, request: Request) -> Response:
    service = _service(service_id)
    claims = await _verify(request, service)
    body = await read_json(request, JSON_BODY)
    if not isinstance(body, dict) or body.get("hook") != service.hook:
        raise FhirError(400, "invalid", f"This service answers the '{service.hook}' hook")
    engine = request.app.state.engine

    def allowed_bases() -> list[str]:  # the verified issuer's registered FHIR bases, never the request's say-so
        return cds_store.fhir_servers(engine, claims["iss"])

    found = await run_in_threadpool(gather, service, body, allowed_bases)
    summary = build_summary(f"Patient/{found.patient}", found.observations, found.flags)
    origin = urls.origin(request.app.state.settings, str(request.base_url))
    today = datetime.now(UTC).date()
    library = request.app.state.fhir.library
    measures = start_measures(library)
    collected = collected_today(measures, found.responses, found.observations, today)
    cards = build_cards(
        summary,
        service=service.id,
        hook=service.hook,
        today=today,
        app_url=f"{origin}/app/launch",
        source_url=f"{origin}/cds-services",
        still_to_rate=None if collected else for_client(measures, found.birth_date, today),
        alliance_flags=alliance_flag_codes(library),
        observations=found.observations,
        gap_margins=gap_margins(library, request.app.state.fhir.scoring.settings),
    )
    if service.hook == "patient-view":  # no outcome measure lately and no open request for it
        outcome = for_client(measures, found.birth_date, today)
        cards += await run_in_threadpool(
            request_cards,
            request.app.state.fhir,
            found.patient,
            found.observations,
            outcome,
            today=today,
            service=service.id,
            app_url=f"{origin}/app/launch",
            source_url=f"{origin}/cds-services",
        )
    return _json({"cards": cards})


@router.post("/{service_id}/feedback")
async def feedback(service_id: str, request: Request) -> Response:
    service = _service(service_id)
    claims = await _verify(request, service, "feedback")
    body = await read_json(request, JSON_BODY)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise FhirError(400, "required", "feedback must be a non-empty list")
    rows = [_feedback_row(service.id, claims["iss"], item, n) for n, item in enumerate(items)]
    await run_in_threadpool(cds_store.add_feedback, request.app.state.engine, rows)
    return Response(status_code=200)


def _feedback_row(service: str, issuer: str, item: Any, index: int) -> dict[str, Any]:
    where = f"feedback[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("card"), str) or not item["card"]:
        raise FhirError(400, "required", f"{where}.card (the card's uuid) is required")
    if item.get("outcome") not in ("accepted", "overridden"):
        raise FhirError(400, "value", f"{where}.outcome must be 'accepted' or 'overridden'")
    if not isinstance(item.get("outcomeTimestamp"), str):
        raise FhirError(400, "required", f"{where}.outcomeTimestamp is required")
    reason = item.get("overrideReason") if isinstance(item.get("overrideReason"), dict) else {}
    coding = reason.get("reason") if isinstance(reason.get("reason"), dict) else None
    comment = reason.get("userComment") if isinstance(reason.get("userComment"), str) else None
    return {
        "service": service,
        "card": item["card"][:64],
        "outcome": item["outcome"],
        "override_reason": orjson.dumps(coding).decode() if coding else None,
        "user_comment": comment[:2000] if comment else None,
        "outcome_timestamp": item["outcomeTimestamp"][:64],
        "issuer": issuer,
    }

"""The resources a card needs: from the request's prefetch, or read from the EHR's FHIR server with the
``fhirAuthorization`` token when a prefetch key is absent (CDS Hooks 2.0 §Prefetch, §FHIR Resource Access)."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.cds_hooks.services import Service
from fhir_server.errors import FhirError

MAX_PAGES = 20


def _entries(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return []
    return [
        e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def gather(service: Service, request: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(patient id, scored Observations oldest first, active Flags)."""
    context = request.get("context") if isinstance(request.get("context"), dict) else {}
    patient = context.get("patientId")
    if not isinstance(patient, str) or not patient:
        raise FhirError(400, "required", "context.patientId is required")
    prefetch = request.get("prefetch") if isinstance(request.get("prefetch"), dict) else {}
    found: dict[str, list[dict[str, Any]]] = {}
    for key in ("observations", "flags"):
        if isinstance(prefetch.get(key), dict):
            found[key] = _entries(prefetch[key])
        else:
            found[key] = _fetch(request, service.prefetch[key].replace("{{context.patientId}}", patient))
    observations = sorted(
        (o for o in found["observations"] if o.get("resourceType") == "Observation"),
        key=lambda o: str(o.get("effectiveDateTime", "")),
    )
    flags = [f for f in found["flags"] if f.get("resourceType") == "Flag" and f.get("status") == "active"]
    return patient, observations, flags


def _fetch(request: dict[str, Any], query: str) -> list[dict[str, Any]]:
    server = request.get("fhirServer")
    authorization = request.get("fhirAuthorization")
    if not isinstance(server, str) or not isinstance(authorization, dict) or not authorization.get("access_token"):
        # CDS Hooks: a service that cannot obtain the data it needs answers 412
        raise FhirError(412, "required", "Prefetch is missing and no fhirServer with fhirAuthorization was given")
    headers = {"Authorization": f"Bearer {authorization['access_token']}", "Accept": "application/fhir+json"}
    url: str | None = f"{server.rstrip('/')}/{query}"
    resources: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=10.0, headers=headers) as client:
            for _ in range(MAX_PAGES):
                if url is None:
                    break
                answer = client.get(url)
                if answer.status_code != 200:
                    raise FhirError(
                        412, "transient", f"The EHR's FHIR server answered {answer.status_code} to the service's read"
                    )
                bundle = answer.json()
                resources += _entries(bundle)
                url = next((link.get("url") for link in bundle.get("link", []) if link.get("relation") == "next"), None)
    except (httpx.HTTPError, ValueError) as exc:
        raise FhirError(412, "transient", f"The EHR's FHIR server could not be read: {type(exc).__name__}") from None
    return resources

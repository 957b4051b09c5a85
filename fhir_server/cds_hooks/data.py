"""The resources a card needs: from the request's prefetch, or read from the EHR's FHIR server with the
``fhirAuthorization`` token when a prefetch key is absent (CDS Hooks 2.0 §Prefetch, §FHIR Resource Access).

The service reads only from a FHIR base registered for the calling CDS client (cds_hooks/fhir_bases.py), checked
before any connection is made; it follows no redirects and no paging link that leaves that base.  Whatever goes
wrong with the read, the caller hears one generic sentence: the peer's error text, addresses and ports go to the
log only (never with the query, which names the patient), so the service cannot be used to probe a network.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.cds_hooks import fhir_bases
from fhir_server.cds_hooks.services import REQUIRED, Service
from fhir_server.errors import FhirError
from fhir_server.outbound import OUTBOUND, OutboundError

log = logging.getLogger("fhir_server.cds_hooks")

MAX_PAGES = 20
TIMEOUT_SECONDS = 10.0
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id; it is put into the query of the EHR reads
UNREACHABLE = "The EHR's FHIR server could not be read; the service's log has the details"
NOT_REGISTERED = (
    "fhirServer is not a FHIR server registered for this CDS client; the administrator registers it with "
    "'fhir-server cds-clients add --fhir-server <base URL>'"
)


class _ReadFailed(Exception):
    """A failed read; ``reason`` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _entries(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return []
    entries = bundle.get("entry")
    return [
        e["resource"]
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


@dataclass(frozen=True)
class Gathered:
    patient: str  # id
    birth_date: str | None
    observations: list[dict[str, Any]]  # scored Observations, oldest first
    flags: list[dict[str, Any]]  # active
    responses: list[dict[str, Any]]  # the newest QuestionnaireResponses


def gather(service: Service, request: dict[str, Any], allowed_bases: Callable[[], Sequence[str]]) -> Gathered:
    """What the cards need, from prefetch or read from the EHR.  ``allowed_bases`` gives the FHIR bases
    registered for the calling CDS client; it is asked only when something must be read.  The optional keys
    (patient, responses) are read when the EHR lets us, and done without when it does not."""
    context = request.get("context") if isinstance(request.get("context"), dict) else {}
    patient = context.get("patientId")
    if not isinstance(patient, str) or not patient:
        raise FhirError(400, "required", "context.patientId is required")
    if not PATIENT_ID.match(patient):
        raise FhirError(400, "value", "context.patientId is not a FHIR id")
    prefetch = request.get("prefetch") if isinstance(request.get("prefetch"), dict) else {}
    found = {key: _resources(prefetch[key]) for key in service.prefetch if isinstance(prefetch.get(key), dict)}
    missing = [key for key in service.prefetch if key not in found]
    if any(key in REQUIRED for key in missing) or (missing and request.get("fhirServer")):
        base, token = _remote(request, allowed_bases)
        for key in missing:
            query = service.prefetch[key].replace("{{context.patientId}}", patient)
            try:
                found[key] = _fetch(base, token, query)
            except FhirError:
                if key in REQUIRED:
                    raise
                found[key] = []  # logged by _fetch; the cards are made without it
    observations = sorted(
        (o for o in found.get("observations", []) if o.get("resourceType") == "Observation" and _has_id(o)),
        key=lambda o: str(o.get("effectiveDateTime", "")),
    )
    flags = [
        f
        for f in found.get("flags", [])
        if f.get("resourceType") == "Flag" and f.get("status") == "active" and _has_id(f)
    ]
    patients = [p for p in found.get("patient", []) if p.get("resourceType") == "Patient" and p.get("id") == patient]
    birth_date = patients[0].get("birthDate") if patients else None
    responses = [r for r in found.get("responses", []) if r.get("resourceType") == "QuestionnaireResponse"]
    return Gathered(patient, birth_date if isinstance(birth_date, str) else None, observations, flags, responses)


def _has_id(resource: dict[str, Any]) -> bool:
    """A prefetched resource the cards can point at: the EHR's data is not ours to trust, and a card names the
    Observations and Flags it speaks of by id (one without is skipped, never a failed hook)."""
    return isinstance(resource.get("id"), str) and PATIENT_ID.match(resource["id"]) is not None


def _resources(value: dict[str, Any]) -> list[dict[str, Any]]:
    """A prefetch value: a search Bundle's resources, or the one resource a read returns."""
    return _entries(value) if value.get("resourceType") == "Bundle" else [value]


def _remote(request: dict[str, Any], allowed_bases: Callable[[], Sequence[str]]) -> tuple[str, str]:
    """The registered base the request names and the token to read it with; refused before any connection."""
    server = request.get("fhirServer")
    authorization = request.get("fhirAuthorization")
    token = authorization.get("access_token") if isinstance(authorization, dict) else None
    if not isinstance(server, str) or not isinstance(token, str) or not token:
        # CDS Hooks: a service that cannot obtain the data it needs answers 412
        raise FhirError(412, "required", "Prefetch is missing and no fhirServer with fhirAuthorization was given")
    base = fhir_bases.registered(server, allowed_bases())
    if base is None:
        # The requested URL is the caller's own input: logged (truncated) so an administrator can see what an
        # EHR sends, but not repeated in the answer.
        log.warning("cds fhirServer refused: not registered for the client", extra={"requested": server[:200]})
        raise FhirError(403, "forbidden", NOT_REGISTERED)
    return base, token


def _fetch(base: str, token: str, query: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    url: str | None = f"{base}/{query}"
    resources: list[dict[str, Any]] = []
    try:
        # outbound.py follows no redirects: a 3xx could point anywhere, and the token would follow it.
        for _ in range(MAX_PAGES):
            if url is None:
                break
            status, bundle = OUTBOUND.get_json(url, headers=headers, timeout=TIMEOUT_SECONDS)
            if status != 200:
                raise _ReadFailed(f"status {status}")
            if not isinstance(bundle, dict):
                raise _ReadFailed("not a FHIR resource")
            if bundle.get("resourceType") != "Bundle":  # a read (Patient/{id})
                return [bundle]
            resources += _entries(bundle)
            url = _next_link(base, bundle)
    except _ReadFailed as failed:
        _log_failure(base, failed.reason)
    except OutboundError as exc:
        _log_failure(base, exc.kind)  # never the URL: its query names the patient
    else:
        return resources
    raise FhirError(412, "transient", UNREACHABLE)


def _next_link(base: str, bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link") if isinstance(bundle.get("link"), list) else []
    target = next((k.get("url") for k in links if isinstance(k, dict) and k.get("relation") == "next"), None)
    if target is None:
        return None
    inside = fhir_bases.within(base, target)
    if inside is None:
        raise _ReadFailed("a paging link leaves the registered FHIR base")
    return inside


def _log_failure(base: str, reason: str) -> None:
    log.warning("cds read from the EHR failed", extra={"fhir_server": base, "reason": reason})

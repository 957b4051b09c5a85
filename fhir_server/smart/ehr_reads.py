"""Reads the app makes from the EHR that launched it, with the launch's own token (the Patient for the banner, a
Questionnaire named in fhirContext).  A failed read is not an error: the caller has a fallback (the id instead of
a name, the launch's measure), so any failure is None."""

from __future__ import annotations

from typing import Any

from fhir_server.outbound import OUTBOUND, OutboundError


def read_from_ehr(fhir_base: str, token: str, reference: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """``Type/id`` at the EHR, or None when it cannot be read."""
    try:
        status, body = OUTBOUND.get_json(
            f"{fhir_base}/{reference}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
            timeout=timeout,
        )
    except OutboundError:
        return None
    return body if status == 200 and isinstance(body, dict) else None

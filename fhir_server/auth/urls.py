"""Where things are, as the outside world sees them: one place for the issuer, the FHIR base (the tokens'
audience) and the authorization endpoints, shared by the authorization server and the resource server.

The origin is ``FHIR_SERVER_PUBLIC_URL`` when set (behind a proxy, always set it), else the request's own
scheme://host[:port].  The issuer is ``{origin}/auth``; the FHIR base is ``FHIR_SERVER_BASE_URL`` or
``{origin}/fhir``.
"""

from __future__ import annotations

from fhir_server.config import Settings


def origin(settings: Settings, request_base: str) -> str:
    """``request_base`` is the request's ``scheme://host[:port]`` (Starlette's ``request.base_url``)."""
    return (settings.public_url or request_base).rstrip("/")


def issuer(settings: Settings, request_base: str) -> str:
    return f"{origin(settings, request_base)}/auth"


def fhir_base(settings: Settings, request_base: str) -> str:
    return (settings.base_url or f"{origin(settings, request_base)}/fhir").rstrip("/")


def audiences(settings: Settings, request_base: str) -> list[str]:
    """Spellings of this server a token's ``aud`` may use."""
    base = fhir_base(settings, request_base)
    return [base, f"{base}/"]

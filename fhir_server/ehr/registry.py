"""EHR registrations: which EHRs may launch the app and receive its results, and how to authenticate to them.

A registration is keyed by the EHR's FHIR base URL, which is the ``iss`` of a SMART launch.  The SMART client
(``client_id``, ``auth_method``, ``client_secret``, ``scope``) is the app's identity for launches; the optional
``backend_client_id`` is a Backend Services client at the same EHR that the outbox worker uses when no launch
token can write.  Bad input raises ``RegistrationError`` with a message for the administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fhir_server import models
from fhir_server.store import ehr_store
from fhir_server.store.engine import Database
from fhir_server.store.records import utc_now

AUTH_METHODS = ("none", "client_secret_basic", "private_key_jwt")
DEFAULT_RESOURCE_TYPES = ("QuestionnaireResponse", "Observation", "Flag", "Provenance")
# What a launch asks for unless told otherwise: the context, the patient for the banner, the encounter (its
# clinician and program, scoring/attribution.py), and writing the results.
DEFAULT_SCOPE = " ".join(
    ["launch", "openid", "fhirUser", "patient/Patient.r", "patient/Encounter.r"]
    + [f"patient/{t}.crus" for t in ("QuestionnaireResponse", "Observation", "Flag", "Provenance")]
)


class RegistrationError(ValueError):
    """A registration that cannot work (bad URL, missing secret, unknown type ...)."""


@dataclass(frozen=True, slots=True)
class EhrRegistration:
    id: int
    issuer: str  # the EHR's FHIR base URL, no trailing slash
    name: str
    client_id: str
    auth_method: str
    client_secret: str | None
    scope: str
    resource_types: tuple[str, ...]
    backend_client_id: str | None
    max_requests_per_second: float | None
    created_at: datetime

    def __repr__(self) -> str:  # never print the secret
        return f"EhrRegistration(id={self.id}, issuer={self.issuer!r}, client_id={self.client_id!r})"


def normalise_issuer(issuer: str) -> str:
    """The comparison form of an EHR's base URL: http(s), a host, no query or fragment, no trailing slash."""
    text = (issuer or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistrationError(f"the issuer must be the EHR's FHIR base URL (http or https), not '{text[:200]}'")
    if parts.query or parts.fragment:
        raise RegistrationError("the issuer must not carry a query or fragment")
    return text.rstrip("/")


def register(
    engine: Database,
    *,
    issuer: str,
    client_id: str,
    auth_method: str = "private_key_jwt",
    client_secret: str | None = None,
    scope: str | None = None,
    name: str | None = None,
    resource_types: list[str] | tuple[str, ...] | None = None,
    backend_client_id: str | None = None,
    max_requests_per_second: float | None = None,
) -> EhrRegistration:
    values = _checked(
        issuer,
        client_id,
        auth_method,
        client_secret,
        scope,
        name,
        resource_types,
        backend_client_id,
        max_requests_per_second,
    )
    try:
        ehr_id = ehr_store.add_registration(engine, values)
    except ehr_store.AlreadyRegistered as exc:
        raise RegistrationError(str(exc)) from None
    found = get(engine, ehr_id)
    assert found is not None
    return found


def _checked(
    issuer: str,
    client_id: str,
    auth_method: str,
    client_secret: str | None,
    scope: str | None,
    name: str | None,
    resource_types: list[str] | tuple[str, ...] | None,
    backend_client_id: str | None,
    rate: float | None,
) -> dict[str, Any]:
    base = normalise_issuer(issuer)
    if not client_id or not client_id.strip() or len(client_id) > 255:
        raise RegistrationError("a client id (1-255 characters) is required")
    if auth_method not in AUTH_METHODS:
        raise RegistrationError(f"the auth method must be one of {', '.join(AUTH_METHODS)}, not '{auth_method[:40]}'")
    if auth_method == "client_secret_basic" and not client_secret:
        raise RegistrationError("client_secret_basic needs a client secret (--secret-stdin or --secret-env NAME)")
    if auth_method != "client_secret_basic" and client_secret:
        raise RegistrationError(f"a secret is only used with client_secret_basic, not {auth_method}")
    types = tuple(dict.fromkeys(resource_types or DEFAULT_RESOURCE_TYPES))
    unknown = [t for t in types if not models.is_resource_type(t)]
    if unknown:
        raise RegistrationError(f"not FHIR R4 resource types: {', '.join(u[:64] for u in unknown)}")
    if rate is not None and not rate > 0:
        raise RegistrationError("the rate cap must be a positive number of requests per second")
    if backend_client_id is not None and (not backend_client_id.strip() or len(backend_client_id) > 255):
        raise RegistrationError("the backend client id must be 1-255 characters")
    return {
        "issuer": base,
        "name": (name or urlsplit(base).netloc)[:200],
        "client_id": client_id.strip(),
        "auth_method": auth_method,
        "client_secret": client_secret or None,
        "scope": " ".join((scope or DEFAULT_SCOPE).split()),
        "resource_types": " ".join(types),
        "backend_client_id": backend_client_id.strip() if backend_client_id else None,
        "max_requests_per_second": rate,
        "created_at": utc_now(),
    }


def _from_row(row: dict[str, Any]) -> EhrRegistration:
    return EhrRegistration(
        id=int(row["id"]),
        issuer=row["issuer"],
        name=row["name"],
        client_id=row["client_id"],
        auth_method=row["auth_method"],
        client_secret=row["client_secret"],
        scope=row["scope"],
        resource_types=tuple(row["resource_types"].split()),
        backend_client_id=row["backend_client_id"],
        max_requests_per_second=row["max_requests_per_second"],
        created_at=row["created_at"],
    )


def get(engine: Database, ehr_id: int) -> EhrRegistration | None:
    row = ehr_store.get_registration(engine, ehr_id)
    return _from_row(row) if row else None


def by_issuer(engine: Database, issuer: str) -> EhrRegistration | None:
    """The registration for a launch's ``iss`` (compared in normalised form); None for an unknown EHR."""
    try:
        base = normalise_issuer(issuer)
    except RegistrationError:
        return None
    row = ehr_store.registration_by_issuer(engine, base)
    return _from_row(row) if row else None


def all_registrations(engine: Database) -> list[EhrRegistration]:
    return [_from_row(r) for r in ehr_store.list_registrations(engine)]


def remove(engine: Database, ehr_id: int) -> bool:
    return ehr_store.remove_registration(engine, ehr_id)

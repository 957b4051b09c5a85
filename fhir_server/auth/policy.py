"""One caller's access policy: the caller's scopes and compartment, consulted explicitly by the FHIR engine.

The engine (engine/interactions.py) holds a ``Policy`` and asks it at every read, search, write, conditional
criterion, include, operation and bundle entry; there is no hook that does nothing when forgotten.  The server's
own work (scoring, the CLI, authorization switched off) runs under ``Policy.server()``, which allows everything
and says so in its name.

The rules themselves live in ``auth/access.py`` (``AccessPolicy``: scopes, the Patient compartment, v2 query
constraints); this object binds them to one caller and turns their yes/no answers into the server's answers:
- no scope for the interaction → 403 ``forbidden`` with ``insufficient_scope``;
- a resource the caller may not see → the same 404 as a missing one (the caller of ``sees`` raises it);
- a write whose new content the caller could not see → 403 (docs/security.md: a patient-context token writes only
  resources whose every patient reference names its patient; the old version is checked by the engine too);
- searches and conditional criteria narrowed in SQL (``confine``), so counts and paging stay right;
- paging cursors sealed with the token's fingerprint;
- conditional-create claims scoped to the caller's compartment (``claim_scope``), so one patient's criteria never
  collide with, or reveal, another patient's resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server import fhirjson
from fhir_server.auth.access import AccessPolicy
from fhir_server.auth.caller import Caller
from fhir_server.errors import FhirError
from fhir_server.search.query import SearchQuery


@dataclass(frozen=True)
class Policy:
    rules: AccessPolicy | None  # None: the server's own work, unrestricted
    caller: Caller

    @classmethod
    def server(cls) -> Policy:
        """The server acting for itself (scoring a response it accepted, the CLI, authorization switched off)."""
        return _SERVER

    @classmethod
    def for_caller(cls, rules: AccessPolicy, caller: Caller) -> Policy:
        return cls(rules, caller)

    @property
    def is_server(self) -> bool:
        return self.rules is None

    @property
    def patient(self) -> str | None:
        """The launch patient whose compartment patient/ scopes are confined to."""
        return None if self.rules is None else self.caller.patient

    @property
    def writes_for_the_clinic(self) -> bool:
        """The server itself, a Backend Services client or a practitioner — not a client or their family.  Only
        such a writer may say a response was scored where it was collected (a client could otherwise keep their
        own answers from raising a Flag)."""
        if self.rules is None or not self.caller.authenticated:
            return True
        user = self.caller.fhir_user
        if user is None:
            return "system" in self.caller.grant.contexts
        kind = [part for part in user.split("?")[0].split("/") if part][-2:-1]
        return kind in (["Practitioner"], ["PractitionerRole"])

    # -- the interaction ------------------------------------------------------------------------------------
    def allows(self, resource_type: str, permission: str) -> bool:
        """Whether some scope allows ``permission`` (one of c r u d s) on the type at all."""
        return self.rules is None or bool(self.rules.scopes(self.caller, resource_type, permission))

    def require(self, resource_type: str, permission: str) -> None:
        if self.rules is not None:
            self.rules.require(self.caller, resource_type, permission)

    def open(self, resource_type: str, permission: str) -> bool:
        """True when the caller may use ``permission`` on every resource of the type (no compartment, no query)."""
        return self.rules is None or self.rules.unrestricted(self.caller, resource_type, permission)

    def is_patient_data(self, resource_type: str) -> bool:
        return self.rules is not None and self.rules.is_patient_data(resource_type)

    # -- one resource ---------------------------------------------------------------------------------------
    def sees(self, resource_type: str, content: str | dict[str, Any] | None, permission: str = "r") -> bool:
        """Whether the caller may use ``permission`` on this resource (stored JSON text or a parsed dict)."""
        if self.open(resource_type, permission):
            return True
        assert self.rules is not None
        resource = _parsed(content)
        return self.rules.visible(self.caller, resource_type, resource, permission)

    def check_write(self, resource_type: str, resource: Any, permission: str) -> None:
        """A create, update or patch may only leave behind content the caller could see: 403 otherwise."""
        if not isinstance(resource, dict) or self.sees(resource_type, resource, permission):
            return
        raise FhirError(
            403,
            "forbidden",
            f"The token may not write this {resource_type}: it names a patient other than the launch patient, "
            "or is outside the token's scopes",
        )

    def patients(self, resource_type: str, content: str | dict[str, Any] | None) -> list[str]:
        """The patients an access is about (for audit records)."""
        if self.caller.patient:
            return [self.caller.patient]
        if self.rules is None:
            return []
        resource = _parsed(content)
        return self.rules.patients_of(resource_type, resource)

    # -- searches and conditional criteria --------------------------------------------------------------
    def confine(self, query: SearchQuery, permission: str = "s") -> SearchQuery:
        """The query narrowed, in SQL, to what the caller may use ``permission`` on (403 without any scope)."""
        return query if self.rules is None else self.rules.confine(self.caller, query, permission)

    @property
    def claim_scope(self) -> str:
        """Prefix of a conditional-create claim: criteria claimed inside one patient's compartment are that
        patient's, so they never collide with another patient's resource."""
        patient = self.patient
        return f"Patient/{patient}:" if patient else ""

    def seal(self, cursor: str | None) -> str | None:
        """A paging cursor as it goes out in a link: bound to the token that made it."""
        fingerprint = self.caller.fingerprint if self.rules is not None else ""
        return f"{fingerprint}~{cursor}" if cursor and fingerprint else cursor

    def unseal(self, cursor: str | None) -> str | None:
        """A paging cursor from a link: 403 when another token made it."""
        fingerprint = self.caller.fingerprint if self.rules is not None else ""
        if not cursor or not fingerprint:
            return cursor
        owner, sep, inner = cursor.partition("~")
        if not sep or owner != fingerprint:
            raise FhirError(403, "forbidden", "This paging link was made for another access token; search again")
        return inner

    # -- operations -----------------------------------------------------------------------------------------
    def check_operation(self, name: str, reveals: Sequence[str], body: Any) -> None:
        """An operation's result shows ``reveals`` types; every posted resource of patient data must be one the
        caller could read or create (``$extract`` of a response naming another patient computes nothing)."""
        for resource_type in reveals:
            self.require(resource_type, "r")
        for resource in posted_resources(body):
            resource_type = resource.get("resourceType")
            if not isinstance(resource_type, str) or not self.is_patient_data(resource_type):
                continue
            if not any(self.sees(resource_type, resource, p) for p in "rc" if self.allows(resource_type, p)):
                raise FhirError(403, "forbidden", f"${name}: the posted {resource_type} is outside the token's access")


def posted_resources(body: Any) -> list[dict[str, Any]]:
    """The resources an operation's body carries: itself, or each ``Parameters.parameter.resource``."""
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") != "Parameters":
        return [body]
    return [
        p["resource"] for p in body.get("parameter", []) if isinstance(p, dict) and isinstance(p.get("resource"), dict)
    ]


_SERVER = Policy(None, Caller.unrestricted())


def _parsed(content: str | dict[str, Any] | None) -> dict[str, Any]:
    """Stored JSON text for access checks, which look at references, codes and labels only: orjson (a decimal's
    spelling, which it loses, is never compared), ~5 times faster than the exact parse."""
    return fhirjson.loads_values(content or "{}") if isinstance(content, str | None) else content

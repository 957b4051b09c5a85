"""What an operation is: its OperationDefinition (declared beside its code) and a handler.

The registry in ``fhir_server.operations`` drives both the routes and the CapabilityStatement, so an operation is
declared exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_server.errors import FhirError

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions

from fhir_server.canonical import BASE as CANONICAL_BASE


@dataclass
class OperationContext:
    fhir: Interactions
    base_url: str
    resource_type: str | None
    resource_id: str | None
    # Query parameters and Parameters.parameter values, as (name, string value) pairs, in order.
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # the POSTed resource (a Parameters, or the resource itself for some operations)
    path: str = ""  # the request path below the FHIR base, for paging links

    def one(self, name: str) -> str | None:
        values = [v for k, v in self.params if k == name]
        if len(values) > 1:
            raise FhirError(400, "invalid", f"Parameter '{name}' may be given only once")
        return values[0] if values else None


@dataclass(frozen=True)
class Operation:
    name: str  # without the '$'
    definition: dict[str, Any]  # the OperationDefinition resource
    handler: Callable[[OperationContext], Any]  # returns a resource (dict) to answer with
    affects_state: bool = False
    # Patient-data types the result shows (an access token needs read scope on each of them)
    reveals: tuple[str, ...] = ()

    @property
    def resource_types(self) -> list[str]:
        return list(self.definition.get("resource", []))

    @property
    def levels(self) -> set[str]:
        d = self.definition
        return {
            level for level, key in (("system", "system"), ("type", "type"), ("instance", "instance")) if d.get(key)
        }


def definition(
    name: str,
    *,
    title: str,
    description: str,
    resources: list[str],
    system: bool = False,
    type_level: bool = False,
    instance: bool = False,
    parameters: list[dict[str, Any]],
    affects_state: bool = False,
) -> dict[str, Any]:
    """An R4 OperationDefinition for one of our operations."""
    return {
        "resourceType": "OperationDefinition",
        "id": name.replace("$", ""),
        "url": f"{CANONICAL_BASE}/OperationDefinition/{name}",
        "name": name.title().replace("-", ""),
        "title": title,
        "status": "active",
        "kind": "operation",
        "description": description,
        "affectsState": affects_state,
        "code": name,
        "resource": resources,
        "system": system,
        "type": type_level,
        "instance": instance,
        "parameter": parameters,
    }


def param(name: str, use: str, type_: str, *, min_: int = 0, max_: str = "1", doc: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "use": use, "min": min_, "max": max_, "type": type_}
    if doc:
        out["documentation"] = doc
    return out

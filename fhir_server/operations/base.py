"""What an operation is: a handler, where it is routed (resource types and levels) and the OperationDefinition the
CapabilityStatement names for it.

A standard operation names HL7's canonical OperationDefinition (``Resource-validate``, ``Patient-everything``, SDC's
``QuestionnaireResponse-extract``...), with what this server supports of it in ``documentation``; an operation of
our own carries its OperationDefinition, stored on start so that its canonical URL resolves on this server
(``OperationDefinition?url=``).  The registry in ``fhir_server.operations`` drives both the routes and the
CapabilityStatement, so an operation is declared exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_server.canonical import BASE as CANONICAL_BASE
from fhir_server.errors import FhirError

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Interactions

HL7 = "http://hl7.org/fhir/OperationDefinition"
SDC = "http://hl7.org/fhir/uv/sdc/OperationDefinition"
# Our OperationDefinitions are published artifacts like the library's: a changed one needs a new version
# (engine/library_sync.py refuses changed content under a stored url|version).
OWN_VERSION = "1.0.0"


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
    prefer: str = ""  # the Prefer header (an asynchronous operation's respond-async, handling=lenient)
    request_url: str = ""  # the full URL the operation was invoked at (a Bulk Data manifest's ``request``)

    def one(self, name: str) -> str | None:
        values = [v for k, v in self.params if k == name]
        if len(values) > 1:
            raise FhirError(400, "invalid", f"Parameter '{name}' may be given only once")
        return values[0] if values else None


@dataclass(frozen=True)
class Answer:
    """A handler's answer other than 200 with a resource: an asynchronous operation's 202 Accepted with its
    ``Content-Location`` (FHIR async pattern)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    name: str  # without the '$'
    handler: Callable[[OperationContext], Any]  # returns a resource (dict) to answer with, or an Answer
    resources: tuple[str, ...]  # the types it is routed for
    levels: frozenset[str]  # of "system", "type", "instance"
    # The OperationDefinition the CapabilityStatement names, per resource type ("*": every type).
    canonicals: Mapping[str, str]
    documentation: str  # what this server supports of it (CapabilityStatement operation.documentation)
    definition: dict[str, Any] | None = None  # our own OperationDefinition (None for HL7's, which we only name)
    affects_state: bool = False
    # Patient-data types the result shows (an access token needs read scope on each of them)
    reveals: tuple[str, ...] = ()

    def canonical(self, resource_type: str | None) -> str:
        """The OperationDefinition for the operation on ``resource_type`` (None: at system level)."""
        return self.canonicals.get(resource_type or "*") or self.canonicals["*"]


def standard(
    name: str,
    handler: Callable[[OperationContext], Any],
    *,
    canonicals: Mapping[str, str],
    resources: list[str],
    levels: set[str],
    documentation: str,
    reveals: tuple[str, ...] = (),
) -> Operation:
    """An operation HL7 defines: the CapabilityStatement names HL7's OperationDefinition for it.  ``levels`` are
    the ones this server routes, at least those HL7's definition declares."""
    return Operation(
        name, handler, tuple(resources), frozenset(levels), dict(canonicals), documentation, reveals=reveals
    )


def own(
    definition: dict[str, Any], handler: Callable[[OperationContext], Any], *, reveals: tuple[str, ...] = ()
) -> Operation:
    """An operation of this server's own, routed as its OperationDefinition says."""
    levels = {level for level in ("system", "type", "instance") if definition.get(level)}
    return Operation(
        definition["code"],
        handler,
        tuple(definition.get("resource", [])),
        frozenset(levels),
        {"*": definition["url"]},
        definition["description"],
        definition,
        definition["affectsState"],
        reveals,
    )


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
        "version": OWN_VERSION,
        "name": name.title().replace("-", ""),
        "title": title,
        "status": "active",
        "kind": "operation",
        "publisher": "fhir-server project",
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

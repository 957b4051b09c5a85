"""Compartments (R4 CompartmentDefinition): which parameters put a resource in another resource's compartment.

Only the Patient compartment is defined here (data/compartment_patient.json, from the R4 specification); the
owner itself belongs to its compartment too (``Patient/{id}/$everything`` includes the Patient).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import orjson

from fhir_server import models
from fhir_server.errors import FhirError
from fhir_server.search.query import AnyClause, ChainClause, CompartmentClause, OrClause
from fhir_server.search.registry import Registry


@cache
def _patient_compartment() -> dict[str, tuple[str, ...]]:
    raw = orjson.loads(resources.files("fhir_server.search").joinpath("data/compartment_patient.json").read_bytes())
    return {t: tuple(codes) for t, codes in raw.items() if models.is_resource_type(t)}


COMPARTMENTS = {"Patient": _patient_compartment}


def compartment_types(owner_type: str) -> list[str]:
    definition = COMPARTMENTS.get(owner_type)
    if definition is None:
        raise FhirError(404, "not-supported", f"No {owner_type} compartment is defined on this server")
    return sorted(definition())


def in_patient_compartments(registry: Registry, member_type: str, patients: AnyClause) -> AnyClause:
    """Resources of ``member_type`` in the Patient compartment of any Patient ``patients`` matches (a Bulk Data
    export of many patients): a chain through each of the type's compartment parameters, ORed."""
    if member_type == "Patient":
        return patients
    codes = _patient_compartment().get(member_type)
    if not codes:
        raise FhirError(404, "not-supported", f"{member_type} is not part of the Patient compartment")
    chains = tuple(
        ChainClause(param, "Patient", patients)
        for code in codes
        if (param := registry.get(member_type, code)) is not None and param.type == "reference"
    )
    return chains[0] if len(chains) == 1 else OrClause(chains)


def compartment_clause(registry: Registry, owner_type: str, owner_id: str, member_type: str) -> CompartmentClause:
    definition = COMPARTMENTS.get(owner_type)
    if definition is None:
        raise FhirError(404, "not-supported", f"No {owner_type} compartment is defined on this server")
    codes = definition().get(member_type)
    if not codes:
        raise FhirError(404, "not-supported", f"{member_type} is not part of the {owner_type} compartment")
    params = tuple(p for code in codes if (p := registry.get(member_type, code)) is not None)
    return CompartmentClause(owner_type, owner_id, params)

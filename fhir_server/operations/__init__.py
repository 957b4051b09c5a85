"""The operation registry: one module per $operation, each declaring beside its code where it is routed and the
OperationDefinition the CapabilityStatement names (HL7's for a standard operation, its own otherwise)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fhir_server.config import Settings
from fhir_server.operations import (
    alliance_summary,
    evaluate_measure,
    everything,
    export,
    expunge,
    extract,
    subscriptions,
    terminology,
    validate,
)
from fhir_server.operations.base import Answer, Operation, OperationContext

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        everything.OPERATION,
        validate.OPERATION,
        terminology.LOOKUP,
        terminology.VALIDATE_CODE,
        terminology.EXPAND,
        extract.OPERATION,
        alliance_summary.OPERATION,
        export.OPERATION,
        subscriptions.STATUS,
        subscriptions.EVENTS,
        evaluate_measure.OPERATION,
        expunge.OPERATION,
    )
}


def declared(settings: Settings) -> dict[str, Operation]:
    """The operations the CapabilityStatement lists: all, but $expunge only where it is switched on (it is routed
    everywhere, to answer the 403 that says it is off)."""
    return {name: op for name, op in OPERATIONS.items() if name != expunge.OPERATION.name or settings.expunge_enabled}


def published_definitions() -> list[tuple[Path, dict[str, Any]]]:
    """Our own OperationDefinitions, stored on start with the library (engine/library_sync.py) so that the
    canonical the CapabilityStatement names resolves here; each with the module that declares it, for messages."""
    return [
        (Path(inspect.getsourcefile(op.handler) or __file__), op.definition)
        for op in OPERATIONS.values()
        if op.definition
    ]


__all__ = ["OPERATIONS", "Answer", "Operation", "OperationContext", "declared", "published_definitions"]

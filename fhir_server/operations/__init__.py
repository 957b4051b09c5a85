"""The operation registry: one module per $operation, each declaring its OperationDefinition beside its code."""

from __future__ import annotations

from fhir_server.operations import alliance_summary, everything, extract, terminology, validate
from fhir_server.operations.base import Operation, OperationContext

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
    )
}

__all__ = ["OPERATIONS", "Operation", "OperationContext"]

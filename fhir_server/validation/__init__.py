"""Validation of incoming resources: FHIR R4 structure plus the rules fhir.resources does not enforce."""

from fhir_server.validation.resource import ID_PATTERN, check_id, validate_resource

__all__ = ["ID_PATTERN", "check_id", "validate_resource"]

"""FHIR R4 interoperability server for feedback-informed treatment measures."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"

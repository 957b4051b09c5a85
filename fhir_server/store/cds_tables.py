"""Tables of the CDS Hooks service: the EHRs allowed to call it (their JWT issuer and keys) and the feedback
they send about cards (accepted / overridden, CDS Hooks 2.0 §Feedback)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from fhir_server.store.tables import metadata

BigId = BigInteger().with_variant(Integer(), "sqlite")

cds_clients = Table(
    "cds_clients",
    metadata,
    Column("issuer", String(512), primary_key=True),  # the ``iss`` of the EHR's JWTs
    Column("name", String(200), nullable=False),
    Column("jwks_uri", String(1024), nullable=True),
    Column("jwks", Text, nullable=True),  # a registered JWKS document, when the EHR publishes none
    # JSON list of the FHIR bases (normalised, cds_hooks/fhir_bases.py) the client may name as fhirServer
    Column("fhir_servers", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
)

cds_feedback = Table(
    "cds_feedback",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("service", String(128), nullable=False),
    Column("card", String(64), nullable=False),  # the card's uuid
    Column("outcome", String(16), nullable=False),  # accepted | overridden
    Column("override_reason", Text, nullable=True),  # JSON Coding
    Column("user_comment", Text, nullable=True),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("issuer", String(512), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Index("ix_cds_feedback_card", "card"),
)

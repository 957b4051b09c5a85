"""Schema.  One definition shared by the Alembic migrations and the repository.

``content`` is the resource's JSON text exactly as served (client JSON plus ``meta``), not JSONB: JSONB reorders
keys and hands decimals back through floats, losing FHIR's significant digits (``1.50``).  Searching never reads
``content``; it reads the typed index tables, which the indexer fills in the same transaction as the write.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BIGINT autoincrement on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

TYPE_LEN, ID_LEN = 64, 64

resources = Table(
    "resources",
    metadata,
    Column("resource_type", String(TYPE_LEN), primary_key=True),
    Column("id", String(ID_LEN), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime, nullable=False),  # naive UTC
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),  # NULL once deleted
    Index("ix_resources_type_updated", "resource_type", "last_updated"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("history_id", BigId, primary_key=True, autoincrement=True),
    Column("resource_type", String(TYPE_LEN), nullable=False),
    Column("id", String(ID_LEN), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
    # No two writers can ever produce the same version: the database refuses the second.
    UniqueConstraint("resource_type", "id", "version_id", name="uq_resource_versions_version"),
    Index("ix_versions_type_history", "resource_type", "history_id"),
    Index("ix_versions_updated", "last_updated"),
)

# Conditional create under concurrency: the normalised search criteria are claimed in a unique-constrained
# table, so two simultaneous "create if none exists" requests cannot both create (HAPI #3141, MS #1382).
conditional_keys = Table(
    "conditional_keys",
    metadata,
    Column("resource_type", String(TYPE_LEN), primary_key=True),
    Column("criteria_hash", String(64), primary_key=True),  # sha256 of the normalised criteria
    Column("resource_id", String(ID_LEN), nullable=False),
    Index("ix_conditional_keys_resource", "resource_type", "resource_id"),
)


def _index_table(name: str, *value_columns: Column, value_index: tuple[str, ...]) -> Table:
    """Every index table has the same identity columns; rows are replaced whenever the resource is written."""
    return Table(
        name,
        metadata,
        Column("resource_type", String(TYPE_LEN), nullable=False),
        Column("resource_id", String(ID_LEN), nullable=False),
        Column("param", String(80), nullable=False),
        # Composite parameters index each component as "<code>#<n>"; ``element`` numbers the node the
        # composite's expression selected, so components match within one element (one Observation.component).
        Column("element", Integer, nullable=True),
        *value_columns,
        Index(f"ix_{name}_resource", "resource_type", "resource_id"),
        Index(f"ix_{name}_value", "resource_type", "param", *value_index),
    )


idx_token = _index_table(
    "idx_token",
    Column("system", String(256), nullable=True),
    Column("code", String(256), nullable=True),
    Column("text", String(256), nullable=True),  # lower-cased display/text for :text
    value_index=("code", "system"),
)
idx_string = _index_table(
    "idx_string",
    Column("value_norm", String(256), nullable=False),  # case- and accent-folded
    Column("value_exact", String(256), nullable=False),
    value_index=("value_norm",),
)
idx_date = _index_table(
    "idx_date",
    Column("low", DateTime, nullable=True),  # inclusive range implied by the value's precision (naive UTC)
    Column("high", DateTime, nullable=True),
    value_index=("low", "high"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(TYPE_LEN), nullable=True),
    Column("target_id", String(ID_LEN), nullable=True),
    Column("url", String(512), nullable=True),  # absolute or canonical references
    Column("version", String(64), nullable=True),  # canonical |version
    value_index=("target_id", "target_type"),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", String(256), nullable=True),
    Column("code", String(256), nullable=True),
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_index=("code", "value"),
)
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_index=("value",),
)
idx_uri = _index_table(
    "idx_uri",
    Column("value", String(512), nullable=False),
    value_index=("value",),
)

INDEX_TABLES = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
}

# The authorization server's token-signing keys (JWK JSON with the private part).  The newest unretired key signs;
# every key retired less than a token lifetime ago stays in the published JWKS so tokens it signed still verify.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_jwk", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),  # naive UTC
    Column("retired_at", DateTime, nullable=True),
)

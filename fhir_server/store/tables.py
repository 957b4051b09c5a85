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
    text,
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

# Not a search parameter's: the clinical series index (scoring/series_index.py).  A client's scored results of one
# measure by one rater series in time order, and the client's active Flags, each one range of the value index
# (resource_type, param, subject_id, subject_type, code, series, at), so scoring's reads do not grow with history.
idx_series = Table(
    "idx_series",
    metadata,
    Column("resource_type", String(TYPE_LEN), nullable=False),
    Column("resource_id", String(ID_LEN), nullable=False),
    Column("param", String(80), nullable=False),
    Column("element", Integer, nullable=True),
    Column("subject_type", String(TYPE_LEN), nullable=False),
    Column("subject_id", String(ID_LEN), nullable=False),
    Column("system", String(256), nullable=False),
    Column("code", String(256), nullable=False),
    Column("series", String(256), nullable=False),
    Column("at", DateTime, nullable=True),
    # Id first (the rows are replaced by resource): with the type first, a planner without statistics could read
    # every Flag's rows through it instead of one client's range of the value index.
    Index("ix_idx_series_resource", "resource_id", "resource_type"),
    Index("ix_idx_series_value", "resource_type", "param", "subject_id", "subject_type", "code", "series", "at"),
)

# Not a search parameter's either: the reporting index (reporting/facts.py).  Supervisors' indicators are SQL over
# it: one row per scored number (a total, an item, a subscale mean) and per raised Flag, with the attribution and
# the interpretations decided when the session was scored.
REPORT_COUNTED = (
    "subject_id", "series", "value", "below", "change", "program", "clinician", "month", "session", "encounter",
    "acknowledged_at", "resource_id",
)  # fmt: skip
idx_report = Table(
    "idx_report",
    metadata,
    Column("resource_type", String(TYPE_LEN), nullable=False),
    Column("resource_id", String(ID_LEN), nullable=False),
    Column("param", String(16), nullable=False),  # score | flag
    Column("element", Integer, nullable=True),
    Column("code", String(128), nullable=False),  # fit-measures (score) or fit-flags (flag) code
    Column("subject_id", String(ID_LEN), nullable=False),  # the Patient
    Column("series", String(200), nullable=False),  # the rater series ("self", or "other:<who>")
    Column("at", DateTime, nullable=False),  # effective (score) or raised (flag), naive UTC
    Column("month", String(7), nullable=False),  # YYYY-MM of ``at``
    Column("session", String(140), nullable=False),  # Encounter/x, else day:YYYY-MM-DD
    Column("encounter", String(140), nullable=True),
    Column("clinician", String(140), nullable=True),  # Practitioner/x or PractitionerRole/x
    Column("program", String(140), nullable=True),  # Organization/x
    Column("value", Float, nullable=True),
    Column("below", Boolean, nullable=True),  # below the cutoff as scored (totals with a cutoff)
    Column("change", String(128), nullable=True),  # " reliable-improvement ... " (fit-interpretation codes)
    Column("status", String(32), nullable=True),  # a Flag's
    Column("acknowledged_at", DateTime, nullable=True),  # a Flag's acknowledgement in the clinician view
    Index("ix_idx_report_resource", "resource_id", "resource_type"),
    # A report reads a period of one code's rows: on PostgreSQL from the index alone (the columns counted are
    # included), not from heap pages where a year's ratings lie scattered among items and other measures.
    Index("ix_idx_report_value", "param", "code", "at", postgresql_include=list(REPORT_COUNTED)),
    # A client's next rating after a Flag, their intake and last rating: one index range each.
    Index("ix_idx_report_subject", "param", "subject_id", "series", "code", "at", postgresql_include=["below"]),
)

# Not a search parameter's either: the combination index (search/combos.py).  A resource's (typed reference, code)
# pairs with its date, so "a client's results of one measure, newest first" is one range of the value index read
# in order for a page (the date descending, then the id, as the general search sorts).
COMBO_KEY = ("resource_type", "param", "ref_id", "code", "ref_type", "token_mode", "system")  # then the order
idx_combo = Table(
    "idx_combo",
    metadata,
    Column("resource_type", String(TYPE_LEN), nullable=False),
    Column("resource_id", String(ID_LEN), nullable=False),
    Column("param", String(80), nullable=False),  # the combination's name
    Column("element", Integer, nullable=True),
    Column("ref_type", String(TYPE_LEN), nullable=False),
    Column("ref_id", String(ID_LEN), nullable=False),
    Column("token_mode", String(1), nullable=False),  # = that system, - no system, * any system
    Column("system", String(256), nullable=False),  # "" unless the mode is =
    Column("code", String(256), nullable=False),
    Column("sort_at", DateTime, nullable=False),  # the latest end of the resource's dates (MIN_DATE: none)
    Index("ix_idx_combo_resource", "resource_type", "resource_id"),
    Index("ix_idx_combo_value", *COMBO_KEY, text("sort_at DESC"), "resource_id"),
)

INDEX_TABLES = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
    "series": idx_series,
    "report": idx_report,
    "combo": idx_combo,
}

# The authorization server's token-signing keys (JWK JSON with the private part, encrypted: store/crypto.py).  The
# newest unretired key signs; every key retired less than a token lifetime ago stays in the published JWKS so tokens
# it signed still verify.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_jwk", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),  # naive UTC
    Column("retired_at", DateTime, nullable=True),
)

# -- the authorization server (SMART on FHIR) -----------------------------------------------------------------
# Secrets are never stored: client secrets, authorization codes, refresh tokens and login-session cookies are kept
# as SHA-256 digests (they are 256-bit random values, so a fast hash is enough); user passwords as argon2 hashes.
# Lists (redirect URIs, origins, fhirContext) are JSON text, read and written whole.
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("client_type", String(16), nullable=False),  # public | confidential
    Column("auth_method", String(32), nullable=False),  # none | client_secret_basic | private_key_jwt
    Column("secret_hash", String(64), nullable=True),
    Column("redirect_uris", Text, nullable=False),  # JSON list, matched exactly
    Column("scope", Text, nullable=False),  # the scopes the client may be granted, space separated
    Column("jwks", Text, nullable=True),  # registered public JWKS (JSON)
    Column("jwks_url", String(2000), nullable=True),
    Column("origins", Text, nullable=False),  # JSON list of browser origins allowed by CORS
    Column("created_at", DateTime, nullable=False),
)

oauth_users = Table(
    "oauth_users",
    metadata,
    Column("user_id", String(64), primary_key=True),  # the ``sub`` of tokens: stable, never reused
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=True),  # none: signs in only through the identity provider
    Column("fhir_user", String(200), nullable=False),  # e.g. Practitioner/123
    Column("may_pick_patient", Boolean, nullable=False, default=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
    # The identity at the external OpenID Connect provider this user signs in as: the provider's issuer and the
    # value of its configured claim (FHIR_SERVER_OIDC_USER_CLAIM).  Linked explicitly, never by a matching name.
    Column("external_issuer", String(500), nullable=True),
    Column("external_subject", String(255), nullable=True),
    UniqueConstraint("external_issuer", "external_subject", name="uq_oauth_users_external"),
)

# The organisations a supervisor (an oauth_users row) may report on: each with every program nested in it
# (Organization.partOf).  ``fhir-server users add ... --supervises Organization/x``.
supervised_organizations = Table(
    "supervised_organizations",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("organization", String(140), primary_key=True),  # Organization/x
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),  # PKCE S256
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhirContext, need_patient_banner, nonce
    Column("expires_at", DateTime, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    # Set when the code is redeemed: the grant its tokens belong to, revoked if the code is presented again.
    Column("sid", String(64), nullable=True),
    Index("ix_oauth_codes_expires", "expires_at"),
)

oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("sid", String(64), nullable=False),  # the grant: every token of one refresh chain shares it
    Column("client_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=True),
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("issued_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used", Boolean, nullable=False, default=False),  # rotated: presenting it again revokes the grant
    Column("revoked", Boolean, nullable=False, default=False),
    Index("ix_oauth_refresh_sid", "sid"),
    Index("ix_oauth_refresh_expires", "expires_at"),
)

oauth_launches = Table(
    "oauth_launches",
    metadata,
    Column("launch_id", String(64), primary_key=True),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("fhir_context", Text, nullable=False),  # JSON list
    Column("username", String(128), nullable=True),  # only this user may complete the launch
    Column("need_patient_banner", Boolean, nullable=False, default=False),
    Column("app_context", Text, nullable=True),  # the EHR's appContext string, passed to the app with the token
    Column("created_by", String(200), nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

oauth_login_sessions = Table(
    "oauth_login_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("csrf_token", String(64), nullable=False),
    Column("user_id", String(64), nullable=True),
    Column("authenticated_at", DateTime, nullable=True),
    Column("pending", Text, nullable=True),  # JSON: the authorization request waiting for login / a patient
    Column("expires_at", DateTime, nullable=False),
    # JSON: a sign-in in progress at the external identity provider (state digest, nonce, PKCE verifier, expiry)
    Column("external_login", Text, nullable=True),
    Index("ix_oauth_sessions_expires", "expires_at"),
)

# Failed (and in-progress) password sign-ins, one row per attempt and key (a username's or a client address's
# digest), for sign-in throttling across worker processes (auth/throttle.py).
oauth_login_failures = Table(
    "oauth_login_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False),
    Column("failed_at", DateTime, nullable=False),
    Index("ix_oauth_login_failures_key", "key_hash", "failed_at"),
    Index("ix_oauth_login_failures_at", "failed_at"),
)

# Backend Services client assertions: a jti is refused while an assertion carrying it could still be valid.
oauth_assertion_jtis = Table(
    "oauth_assertion_jtis",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_oauth_jtis_expires", "expires_at"),
)

# Revoked access tokens (by jti, kept until they would have expired) and revoked grants (by sid).
oauth_revoked_tokens = Table(
    "oauth_revoked_tokens",
    metadata,
    Column("jti", String(255), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
)
oauth_revoked_grants = Table(
    "oauth_revoked_grants",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("revoked_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

# The SMART app's server-side sessions (backend for frontend): the browser holds only an opaque id in a cookie;
# tokens, launch context, the draft answers and the submission live here.  Only the id's SHA-256 is stored, so a
# copy of this table lets nobody resume a session.
app_sessions = Table(
    "app_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    # Random per launch and kept when the id is rotated: the submitted response's identifier derives from it.
    Column("submission_key", String(64), nullable=False),
    # The launch in flight (between /app/launch and the callback).
    Column("launch_state", String(128), nullable=True),
    Column("code_verifier", Text, nullable=True),  # encrypted: longer than the verifier's 128 characters
    Column("launch_iss", Text, nullable=True),
    Column("ehr_id", BigInteger, nullable=True),  # the EHR registration (ehr_registrations.id) of the launch
    # What the EHR's token response gave: kept server-side only, never sent to the browser.  The tokens and the PKCE
    # verifier are encrypted (store/crypto.py): a refresh token read from this table would mint new EHR tokens.
    Column("access_token", Text, nullable=True),
    Column("refresh_token", Text, nullable=True),
    Column("token_expires_at", DateTime, nullable=True),
    Column("scope", Text, nullable=True),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("fhir_user", String(200), nullable=True),
    Column("fhir_context", Text, nullable=True),  # JSON list
    Column("need_patient_banner", Boolean, nullable=False, default=False),
    Column("smart_style_url", Text, nullable=True),
    Column("questionnaire", Text, nullable=True),  # canonical url|version of the measure to show
    Column("app_view", String(16), nullable=True),  # what the launch opens: form | clinician
    Column("app_flag", String(64), nullable=True),  # the Flag id a CDS card's appContext points the view at
    Column("language", String(16), nullable=True),  # the form's language (migration 0018): switch, launch or negotiated
    Column("task_id", String(64), nullable=True),  # the Task a form opened from a link completes (migration 0018)
    Column("draft", Text, nullable=True),  # JSON {linkId: value}
    Column("response_id", String(64), nullable=True),  # set in the transaction that stores the response
    Column("submitted_at", DateTime, nullable=True),
    Index("ix_app_sessions_expires", "expires_at"),
)

# -- EHR write-back (issue 7) ---------------------------------------------------------------------------------
# EHRs this server is launched from and writes results back to.  ``client_secret`` is encrypted (store/crypto.py),
# not hashed: unlike the secrets this server issues (stored as digests), it has to be presented to the EHR.
ehr_registrations = Table(
    "ehr_registrations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("issuer", String(2000), nullable=False, unique=True),  # the EHR's FHIR base URL (SMART ``iss``)
    Column("name", String(200), nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("auth_method", String(32), nullable=False),  # none | client_secret_basic | private_key_jwt
    Column("client_secret", Text, nullable=True),
    Column("scope", Text, nullable=False),  # space separated
    Column("resource_types", Text, nullable=False),  # space separated: what is written back
    Column("backend_client_id", String(255), nullable=True),  # Backend Services client at the EHR
    Column("max_requests_per_second", Float, nullable=True),  # None: no cap
    Column("created_at", DateTime, nullable=False),  # naive UTC
)

# The durable outbox: one row per (EHR, QuestionnaireResponse) delivery, inserted in the transaction that stores
# the local results.  A row is due when pending and ``next_attempt_at`` has passed; a worker claims it by moving
# ``next_attempt_at`` past its lease, so a worker that dies mid-delivery only delays the row.  No foreign key to
# the registration: rows outlive a removed EHR as dead letters an administrator can still see.
ehr_outbox = Table(
    "ehr_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ehr_id", BigInteger, nullable=False),
    Column("response_id", String(ID_LEN), nullable=False),  # QuestionnaireResponse/<response_id>
    Column("token_ref", String(255), nullable=True),  # opaque reference to the launch session
    Column("status", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("last_error", Text, nullable=True),  # never PHI: status codes and transport errors only
    Column("created_at", DateTime, nullable=False),
    Column("delivered_at", DateTime, nullable=True),
    Index("ix_ehr_outbox_due", "status", "next_attempt_at"),
    Index("ix_ehr_outbox_response", "response_id"),
    Index("ix_ehr_outbox_ehr", "ehr_id", "status"),
)

# One value sealed with the secret key when it was first used on this database: start-up opens it to tell a wrong
# or missing key (refuse to start) from a fresh database (nothing encrypted yet).  store/secret_store.py.
secret_key_check = Table(
    "secret_key_check",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),  # naive UTC
)

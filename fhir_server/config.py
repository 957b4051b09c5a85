"""Settings, read from the environment (prefix ``FHIR_SERVER_``) and optionally a ``.env`` file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite:///./fhir-server.db"
# Beside the default SQLite database, for development: `make serve` creates it on first start (docs/security.md).
DEFAULT_SECRET_KEY_FILE = "fhir-server.key"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LIBRARY_FOLDERS = ("terminology", "questionnaires", "indicators")  # codes, instruments, supervisors' indicators
DEFAULT_LIBRARY = os.pathsep.join(str(PROJECT_ROOT / n) for n in LIBRARY_FOLDERS if (PROJECT_ROOT / n).is_dir())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_SERVER_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_SQLITE_URL
    # A PostgreSQL streaming replica of database_url (postgresql://...): callers' searches, history and reads go to
    # it, except a caller's own recent writes not replayed there yet (store/replica.py).  Empty: the primary only.
    read_replica_url: str = ""
    # Public base URL of the FHIR endpoint, used in Location headers and Bundle links.
    # Empty means "derive from the request" (scheme://host/fhir).
    base_url: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    # Concurrent writers that collide on a version number retry this many times before a 409.
    write_retries: int = 8
    # Database connections each worker process keeps open (per pool: writes and, on PostgreSQL, reads).  A quarter
    # more may open for a burst, but those close when returned, and a new PostgreSQL connection costs a backend
    # start and cold caches (at 10 + 10, 16 concurrent submissions on one worker churned ~15 connections a second).
    # 2 workers use at most 2 x 2 x 20 = 80 connections, inside PostgreSQL's default max_connections of 100.
    db_pool_size: int = 16
    # SQLite waits this long for a lock before the request answers 503 lock-error.
    sqlite_busy_timeout_ms: int = 5000
    log_level: str = "info"
    # Folders of instruments (questionnaires/<id>/) and terminology files, separated by the OS path separator;
    # stored on start.  Content packs (licensed wording) likewise.
    library_dirs: str = DEFAULT_LIBRARY
    content_packs: str = ""
    load_library: bool = True
    # Per-site scoring settings, e.g. FHIR_SERVER_SCORING_OVERRIDES='{"srs-cutoff.comparator": "<="}'
    scoring_overrides: dict[str, Any] = {}
    # Validation rule families whose errors this site stores with a warning instead of refusing, comma separated:
    # binding, invariant, extension, reference, bundle, profile, definition (fhir_server/validation/families.py).
    validation_warn_only: str = ""
    # A terminology server (its FHIR base) for codes of systems and value sets this server does not hold (SNOMED CT,
    # LOINC...): asked with $validate-code, answers cached for an hour.  Empty: such codes are not judged.
    terminology_url: str = ""

    # -- authorization (SMART on FHIR) -------------------------------------------------------------------
    # Every /fhir request except /metadata needs a bearer token.  false is for local development and for tests
    # that are not about access; the server then logs a warning at start-up and audits nothing.
    auth_required: bool = True
    # Public origin of this server (scheme://host[:port]) for the issuer, endpoints in discovery documents and
    # token audiences.  Empty means "derive from the request".
    public_url: str = ""
    access_token_lifetime_seconds: int = 300
    refresh_token_lifetime_seconds: int = 30 * 24 * 3600
    # Authorization servers whose access tokens /fhir also accepts (an EHR's), as JSON:
    # [{"issuer": "https://ehr.example/auth", "jwks_uri": "https://ehr.example/auth/jwks"}]
    trusted_issuers: list[dict[str, str]] = []
    # jku URLs a Backend Services client may point its assertion at (besides keys registered with the client)
    jku_allow_list: list[str] = []
    # The login session of the authorization server's pages (/auth/login, the patient picker).
    login_session_seconds: int = 3600
    # Mark the login cookie Secure (SameSite=None; Partitioned) even when requests arrive over plain http, e.g.
    # behind a TLS-terminating proxy that does not send X-Forwarded-Proto.  https requests always get it.
    cookie_secure: bool = False
    # Reverse proxies (IP addresses or CIDR ranges; comma separated, or a JSON list) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (middleware.TrustedProxyHeaders).  Default none: the headers are ignored even
    # from loopback, so a client cannot name a new address on each attempt to escape the per-address sign-in limit.
    trusted_proxies: list[str] | str = []  # always a list once validated (str only lets the env value be CSV)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_networks(cls, value: Any) -> list[str]:
        entries = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value or [])
        try:  # a typo must stop the server, not silently trust nobody (or everybody)
            return [str(ipaddress.ip_network(str(e), strict=False)) for e in entries if e]
        except ValueError as exc:
            raise ValueError(f"FHIR_SERVER_TRUSTED_PROXIES: {exc}") from None

    # Origins of EHRs allowed to show this server's pages in an iframe (CSP frame-ancestors), as JSON:
    # ["https://ehr.example.org"].  'self' is always allowed.
    frame_ancestors: list[str] = []
    # The SMART style sheet announced in token responses; empty means this server's own /auth/smart-style.json.
    smart_style_url: str = ""
    # Failed password sign-ins allowed within the window, per username and per client address; more are answered
    # 429 with Retry-After.  Counted in the database, so every worker process sees the same counts.
    login_max_failures_per_user: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window_seconds: int = 900
    # An external OpenID Connect identity provider for sign-in (docs/authorization.md, "External identity
    # provider").  Empty issuer means none: users sign in with their local passwords only.
    oidc_issuer: str = ""  # exactly the provider's "issuer"; discovery is read from {issuer}/.well-known/...
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    # How this server authenticates at the provider's token endpoint: client_secret_basic, client_secret_post, or
    # private_key_jwt (an assertion signed with this server's own key; register {origin}/auth/jwks there).
    oidc_token_auth_method: str = "client_secret_basic"
    oidc_scopes: str = "openid profile email"
    # The id_token claim whose value names a registered user (``fhir-server users add --external-subject``):
    # preferred_username, sub, or email (email only when the provider says email_verified).
    oidc_user_claim: str = "preferred_username"
    oidc_display_name: str = ""  # the button says "Sign in with <this>"; empty means the issuer's host
    # id_token signature algorithms accepted (asymmetric only: never none, never HMAC).
    oidc_id_token_algorithms: list[str] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
    # With an identity provider configured: whether local passwords are still accepted on /auth/login.
    local_passwords: bool = True

    # -- the SMART app (/app): the rating form and its server-side sessions ------------------------------------
    # How long a launch stays open for the client to answer (the session, its tokens and its draft).
    app_session_seconds: int = 3600
    # POST /app/dev-session creates a form session for any patient without an EHR launch: development and tests
    # only.  Off, the route does not exist.
    app_dev_sessions: bool = False
    # The sandbox EHR page (/sandbox) with demo clients and a demo sign-in; `make serve` turns it on.  Never on a
    # server with real patients.
    sandbox: bool = False

    # -- EHR write-back outbox (fhir_server/ehr) ---------------------------------------------------------------
    # The delivery worker runs in the server process; off for processes that must never send anything.
    outbox_worker: bool = True
    outbox_poll_seconds: PositiveFloat = 1.0  # how often an idle worker looks for due rows
    outbox_timeout_seconds: PositiveFloat = 10.0  # per request to an EHR (connect, read, write)
    outbox_base_delay_seconds: PositiveFloat = 2.0  # backoff before retry n is random(0, min(max, base * 2^(n-1)))
    outbox_max_delay_seconds: PositiveFloat = 600.0
    # Then the row is dead (``fhir-server outbox list --dead``); with the defaults, about an hour of retrying.
    outbox_max_attempts: PositiveInt = 20
    # A claimed row is not claimed again for this long; it must outlast one delivery (a few requests, each up to
    # the timeout), and is how a row claimed by a worker that died becomes due again.
    outbox_lease_seconds: PositiveFloat = 120.0

    # -- Messages to clients: email and SMS (fhir_server/messaging, issue 22) -------------------------------------
    # The message worker runs in the server process; off for processes that must never send anything (the rows
    # wait, pending, for a process that sends them).
    message_worker: bool = True
    message_poll_seconds: PositiveFloat = 2.0  # how often an idle worker looks for due rows
    # Backoff after failed attempt n: min(max, base * 2^(n-1)), the upper half of it at random (spreads an outage's
    # retries).  A row is dead after max_attempts, or once it is max_age old (a link sent a day late helps nobody).
    message_base_delay_seconds: PositiveFloat = 30.0
    message_max_delay_seconds: PositiveFloat = 3600.0
    message_max_attempts: PositiveInt = 50
    message_max_age_seconds: PositiveFloat = 24 * 3600.0
    # A claimed row is not claimed again for this long: it must outlast one send (the SMTP or SMS timeout).
    message_lease_seconds: PositiveFloat = 120.0
    # A row whose channel has no transport configured stays pending; it is looked at again this often.
    message_unconfigured_recheck_seconds: PositiveFloat = 300.0
    # Email: smtp://host[:port] (STARTTLS, port 587 by default) or smtps://host[:port] (implicit TLS, 465).
    # Empty: no email is sent (on the sandbox, it is captured in the sandbox mailbox instead).
    smtp_url: str = ""
    # With smtp://: "required" refuses to send without STARTTLS; "opportunistic" uses it when offered; "off" never
    # does and sends in the clear: only for a test server on this machine.  Credentials never go without TLS.
    smtp_starttls: Literal["required", "opportunistic", "off"] = "required"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: PositiveFloat = 20.0  # per SMTP connection and command
    # A PEM file of CA certificates to trust for the SMTP server (a relay with a private CA); empty: the system's.
    smtp_ca_file: str = ""
    mail_from: str = ""  # the From address, e.g. "Clinic <no-reply@clinic.example>"
    # SMS: a generic HTTP gateway; each message is one POST of the body template to exactly this URL.
    sms_gateway_url: str = ""
    sms_gateway_token: SecretStr = SecretStr("")  # sent as "Authorization: Bearer ..."; or username/password:
    sms_gateway_username: str = ""
    sms_gateway_password: SecretStr = SecretStr("")
    # JSON with {to} and {text} placeholders inside strings, replaced by the JSON-escaped values.
    sms_body_template: str = '{"to": "{to}", "text": "{text}"}'
    sms_timeout_seconds: PositiveFloat = 10.0
    # Sandbox only: where email and SMS are captured when their channel has no transport configured.  Empty: a
    # folder "sandbox-mailbox" beside the SQLite database, else ./sandbox-mailbox.
    sandbox_mailbox: str = ""
    # -- end of the messages block ----------------------------------------------------------------------------------

    # -- Topic-based subscriptions (fhir_server/subscriptions, README "Subscriptions") ---------------------------
    # The notification worker runs in the server process; off for processes that must never send anything (the
    # events wait, queued, for a process that sends them).
    subscription_worker: bool = True
    # Endpoints on this machine (localhost, 127.0.0.0/8, ::1) and link-local addresses are refused unless the operator
    # allows them (a receiver beside the server, development, tests): otherwise any client allowed to write a
    # Subscription could make the server POST to services that trust its machine.
    subscription_local_endpoints: bool = False
    # When set (a JSON list of URL prefixes, e.g. ["https://integration.hospital.org/fhir-hooks/"]), a Subscription's
    # endpoint must start with one of them: written otherwise it is refused, and one written before the list changed
    # goes to error at its next notification.  Empty: any endpoint the checks above allow.
    subscription_endpoints: list[str] = []

    @field_validator("subscription_endpoints")
    @classmethod
    def _endpoint_prefixes(cls, value: list[str]) -> list[str]:
        prefixes = []
        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"FHIR_SERVER_SUBSCRIPTION_ENDPOINTS: '{entry}' is not an http(s) URL prefix")
            # a prefix ends at a path boundary: https://a.org must not allow https://a.org.evil.example
            prefixes.append(entry if entry.endswith("/") else entry + "/")
        return prefixes

    subscription_poll_seconds: PositiveFloat = 1.0  # how often an idle worker looks for work
    subscription_base_delay_seconds: PositiveFloat = 2.0  # backoff, full jitter, as the outbox's
    subscription_max_delay_seconds: PositiveFloat = 300.0
    # Consecutive failed notifications before the Subscription goes to ``error`` (its events are kept, and sent
    # in order after ``fhir-server subscriptions retry``); with the defaults, about half an hour of retrying.
    subscription_max_attempts: PositiveInt = 12
    subscription_lease_seconds: PositiveFloat = 120.0  # must outlast one notification (its timeout is at most 60 s)

    # -- Bulk Data $export (fhir_server/export, README "Bulk export") -------------------------------------------
    # Jobs run in the server process, one at a time per process; off for processes that must not run them (the
    # jobs wait, queued, for a process that does).
    export_worker: bool = True
    # Where the NDJSON files are written (a folder every server process sharing the database can read).
    export_dir: str = "./fhir-exports"
    export_poll_seconds: PositiveFloat = 1.0  # how often an idle worker looks for queued jobs and expired files
    # Jobs not finished yet (queued or running) across all clients; more kick-offs answer 429 with Retry-After.
    export_max_active_jobs: PositiveInt = 4
    export_file_lifetime_seconds: PositiveInt = 24 * 3600  # files (and the job) are removed after this
    export_page_size: PositiveInt = 1000  # resources per keyset page: each page is its own short read
    # A pause between pages, to spread a large export's load on a busy clinical database (0: none).
    export_page_pause_seconds: NonNegativeFloat = 0.0
    # While this process answers requests, an export takes at most this share of one thread's time (it pauses after
    # a page for the rest); alone it runs at full speed.  Reads and submissions come first (bench/export.py).
    export_busy_share: Annotated[float, Field(gt=0, le=1)] = 0.25
    export_retry_after_seconds: PositiveInt = 5  # the Retry-After of a status answer while a job runs
    # A claimed job is not claimed by another process while its worker renews this lease (after every page);
    # a worker that died leaves it to be resumed, from its last finished type, once the lease has run out.
    export_lease_seconds: PositiveFloat = 60.0
    export_max_attempts: PositiveInt = 3  # attempts that end in an unexpected error before the job has failed
    # Supervisors' reports: the early-dropout indicator's "no session in the last N days" (indicators/early-dropout).
    dropout_days: PositiveInt = 30
    # The supervision page (and its CSV) shows a cell counting fewer distinct clients than this as "< N", with no
    # value, interval or counts: a rate of two clients' sessions says little and may point at who they are.
    report_min_clients: PositiveInt = 5
    # A client (a patient-context token) may read their therapist's own rating of a session, its gap with theirs
    # and the Flag it raises (meta.security clinician-only); by default they may not (the rating is the therapist's).
    client_sees_therapist_rating: bool = False
    # Blind by default: the clinician view and the result page keep the client's latest SRS (and what it raised)
    # hidden while its session has no rating by the therapist and is less than a day old, and offer the therapist's
    # form instead; a therapist who saw the client's score first can no longer rate the session independently, so
    # the gap between the two would mean little (clinician/blind.py).  false shows it at once.
    therapist_rating_blind: bool = True
    # A report's statements run side by side on this many database connections (one snapshot; PostgreSQL only).
    report_connections: PositiveInt = 2
    # Requests to complete a measure (SDC complete-questionnaire Tasks, fhir_server/measure_tasks): a Task without
    # restriction.period.end expires this many days after its authoredOn (then cancelled, "Expired before it was
    # completed"); the CDS card on patient-view suggests asking for the outcome measure when the client has none in
    # the last task_card_days days and no open request for it.
    # Open requests past their expiry are cancelled by a sweep this often (measure_tasks/worker.py).
    task_expiry_worker: bool = True
    task_expiry_poll_seconds: PositiveFloat = 300.0
    task_days: PositiveInt = 4
    task_card_days: PositiveInt = 14

    # -- form links sent to clients between sessions (fhir_server/outreach, web/link_routes.py) ---------------------
    # Where clients reach this server: the links in the messages start with it.  Empty: FHIR_SERVER_PUBLIC_URL; a
    # Task asking for a link is refused (422) while neither is set, rather than sending a link that cannot open.
    link_base_url: str = ""
    # Before a link opens the form, the client confirms who they are: ``birth-year`` (the Patient's birthDate must
    # then be known here) or ``none`` (the link alone is enough: only for sites whose links go to verified devices).
    link_identity_check: Literal["birth-year", "none"] = "birth-year"
    link_check_attempts: PositiveInt = 5  # wrong answers before the link locks for link_lock_seconds
    link_lock_seconds: PositiveInt = 15 * 60
    link_address_attempts: PositiveInt = 30  # wrong answers from one client address, over every link, per window
    # A reminder goes this long after the link and then again each time until the Task is completed or expires.
    link_reminder_seconds: PositiveFloat = 2 * 24 * 3600
    link_max_reminders: NonNegativeInt = 3
    link_max_per_patient_per_day: PositiveInt = 10  # a loop in an integrator's code must not flood a client
    # The sender's name in the messages (never the client's or the measure's: no PHI in a message).
    site_name: str = "Your care team"

    # -- health checks and metrics (web/health_routes.py, README "Health checks and metrics") ----------------------
    # /healthz and /readyz answer anyone, without a token: they say pass or fail and name a failed check, nothing
    # more.  /readyz fails the database check when a trivial query has not answered within this many seconds.
    readiness_timeout_seconds: PositiveFloat = 2.0
    # /metrics (Prometheus text format): "off" (404), "loopback" (only clients at 127.0.0.1 or ::1, as decided by
    # FHIR_SERVER_TRUSTED_PROXIES: behind a reverse proxy on this machine that is not listed there, every client
    # looks like loopback) or "open" (anyone who can reach the port: pair it with a token).
    metrics: Literal["off", "loopback", "open"] = "loopback"
    # When set, /metrics also needs "Authorization: Bearer <this token>" (401 without), whatever the mode above.
    metrics_token: SecretStr = SecretStr("")
    # -- end of the health checks and metrics block --------------------------------------------------------------

    # -- erasure and audit retention (operations/expunge.py, auth/retention.py) -----------------------------------
    # POST [type]/[id]/$expunge removes every version of a resource, Patient/[id]/$expunge the patient's whole
    # record, for good (right to erasure, test data): refused (403) unless switched on here, and then only for a
    # Backend Services token that also holds the scope fhir-server/expunge.
    expunge_enabled: bool = False
    # The AuditEvents of reads and searches older than this many days are removed (0: every AuditEvent is kept);
    # those of writes and operations are kept.  By a sweep in the server process, or `fhir-server audit prune`.
    audit_retention_days: NonNegativeInt = 0
    audit_retention_worker: bool = True  # the sweep runs in this process (when audit_retention_days is set)
    # -- end of the erasure and audit retention block -----------------------------------------------------------

    # -- secrets at rest (store/crypto.py, docs/security.md) ------------------------------------------------------
    # The key that encrypts stored secrets (an EHR's tokens and client secret, the signing keys): 32 random bytes,
    # base64url (`fhir-server keys new-secret`).  Empty: read from the key file; that file is only required when
    # named explicitly.  Never kept in the database.
    secret_key: SecretStr = SecretStr("")
    secret_key_file: str = DEFAULT_SECRET_KEY_FILE
    # During a rotation: the old key(s), comma separated, still accepted for reading (`fhir-server keys
    # rotate-secret` then re-encrypts everything under secret_key).
    secret_key_previous: SecretStr = SecretStr("")

    def library_paths(self) -> list[Path]:
        return [Path(p) for p in self.library_dirs.split(os.pathsep) if p]

    def content_pack_paths(self) -> list[Path]:
        return [Path(p) for p in self.content_packs.split(os.pathsep) if p]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

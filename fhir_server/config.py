"""Settings, read from the environment (prefix ``FHIR_SERVER_``) and optionally a ``.env`` file."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite:///./fhir-server.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_SERVER_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_SQLITE_URL
    # Public base URL of the FHIR endpoint, used in Location headers and Bundle links.
    # Empty means "derive from the request" (scheme://host/fhir).
    base_url: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    # Concurrent writers that collide on a version number retry this many times before a 409.
    write_retries: int = 8
    db_pool_size: int = 10
    # SQLite waits this long for a lock before the request answers 503 lock-error.
    sqlite_busy_timeout_ms: int = 5000
    log_level: str = "info"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

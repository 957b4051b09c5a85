"""Settings, read from the environment (prefix ``FHIR_SERVER_``) and optionally a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite:///./fhir-server.db"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIBRARY = os.pathsep.join(
    str(PROJECT_ROOT / name) for name in ("terminology", "questionnaires") if (PROJECT_ROOT / name).is_dir()
)


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
    # Folders of instruments (questionnaires/<id>/) and terminology files, separated by the OS path separator;
    # stored on start.  Content packs (licensed wording) likewise.
    library_dirs: str = DEFAULT_LIBRARY
    content_packs: str = ""
    load_library: bool = True
    # Per-site scoring settings, e.g. FHIR_SERVER_SCORING_OVERRIDES='{"srs-cutoff.comparator": "<="}'
    scoring_overrides: dict[str, Any] = {}

    def library_paths(self) -> list[Path]:
        return [Path(p) for p in self.library_dirs.split(os.pathsep) if p]

    def content_pack_paths(self) -> list[Path]:
        return [Path(p) for p in self.content_packs.split(os.pathsep) if p]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

"""The composition root: the objects the web app and the CLI share, built in one place.

``build_core`` opens the database engines, the search registry, the repository, the instrument library and the
FHIR engine over them (under the server's own policy).  ``create_app`` adds HTTP, authorization and the SMART app
on top; CLI commands that only need the engine (reindex, load) use the core alone instead of building a web app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.auth.policy import Policy
from fhir_server.config import Settings
from fhir_server.engine.interactions import Interactions
from fhir_server.library import Library, discover
from fhir_server.search.indexer import SearchIndexer
from fhir_server.search.registry import Registry, default_registry
from fhir_server.store.engine import build_engine, build_read_engine
from fhir_server.store.replica import build_replica
from fhir_server.store.repository import Repository


@dataclass
class Core:
    settings: Settings
    engine: Any  # the database engine (writes); the repository holds the read engine
    registry: Registry
    repository: Repository
    library: Library
    fhir: Interactions

    def close(self) -> None:
        if self.repository.replica is not None:
            self.repository.replica.close()
        self.repository.read_engine.dispose()
        self.engine.dispose()


def build_core(settings: Settings, library: Library | None = None) -> Core:
    """``library``: the instruments to serve; by default those the settings name (library and content packs)."""
    engine = build_engine(settings)
    registry = default_registry()
    read_engine = build_read_engine(settings, engine)
    repository = Repository(
        engine,
        SearchIndexer(registry),
        write_retries=settings.write_retries,
        read_engine=read_engine,
        replica=build_replica(settings, read_engine),  # FHIR_SERVER_READ_REPLICA_URL: callers' reads (deps.py)
    )
    if library is None:
        library = discover(settings.library_paths(), settings.content_pack_paths())
    fhir = Interactions(repository, registry, settings, library, policy=Policy.server())
    return Core(settings, engine, registry, repository, library, fhir)

"""Keep the database in step with the library: each resource stored once per url|version.

Idempotent and safe with several workers starting at once (a conditional create on url and version).  A file
whose content changed while its version did not is refused, naming the file: published versions never change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server import fhirjson
from fhir_server.engine.interactions import Interactions
from fhir_server.library.errors import LoadError

_IGNORED = ("id", "meta", "text")


@dataclass
class SyncSummary:
    created: int = 0
    unchanged: int = 0


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _IGNORED}


def resource_id(resource: dict[str, Any]) -> str:
    """A readable, stable id per url|version: ``srs-1.0.0``."""
    base = resource.get("id") or resource["url"].rstrip("/").rsplit("/", 1)[-1]
    version = resource["version"]
    return base if base.endswith(version) else f"{base}-{version}"[:64]


def sync_resources(
    fhir: Interactions,
    resources: list[tuple[Path, dict[str, Any]]],
    on_progress: Callable[[int, int], None] | None = None,
) -> SyncSummary:
    summary = SyncSummary()
    fhir = fhir.without_terminology()
    for number, (path, resource) in enumerate(resources, start=1):
        resource_type = resource["resourceType"]
        if "url" not in resource or "version" not in resource:
            raise LoadError(f"{path}: library resources need a url and a version")
        criteria = f"url={resource['url']}&version={resource['version']}"
        wanted = {**resource, "id": resource_id(resource)}
        result = fhir.repo.write(
            lambda session, wanted=wanted, rt=resource_type, criteria=criteria: fhir.create(
                session, rt, wanted, if_none_exist=criteria, resource_id=wanted["id"]
            )
        )
        if result.existing:
            stored = fhirjson.loads_stored(result.stored.content or "{}")
            if _comparable(stored) != _comparable(resource):
                raise LoadError(
                    f"{path}: {resource_type} {resource['url']}|{resource['version']} is already stored with "
                    "different content; a changed artifact needs a new version"
                )
            summary.unchanged += 1
        else:
            summary.created += 1
        if on_progress:
            on_progress(number, len(resources))
    return summary

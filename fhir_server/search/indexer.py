"""Index rows for one resource: every registered parameter's values, typed by its parameter-type module."""

from __future__ import annotations

from typing import Any

from fhir_server.search.registry import Registry
from fhir_server.search.types import MODULES


class SearchIndexer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def index_rows(self, resource_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {}
        for param in self.registry.indexed_for(resource_type):
            module = MODULES[param.type]
            values = param.evaluator(resource)
            if not values:
                continue
            seen = set()
            for row in module.index(values):
                key = tuple(row.values())
                if key in seen:
                    continue
                seen.add(key)
                row["param"] = param.code
                rows.setdefault(module.TABLE, []).append(row)
        return rows

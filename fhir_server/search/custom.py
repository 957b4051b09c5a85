"""SearchParameter resources POSTed to the server extend the registry.

Every worker process keeps its registry in step with the database: before a request is served it checks (at most
every ``interval`` seconds, or at once after this process wrote a SearchParameter) whether SearchParameter
resources changed, and reloads them.  New values are indexed on write; ``fhir-server reindex`` applies a new
parameter to resources stored before it existed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_server import fhirjson, models
from fhir_server.errors import FhirError
from fhir_server.search.paths import split_union
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.types import MODULES

log = logging.getLogger("fhir_server.search")
SUPPORTED_TYPES = (*MODULES, "composite")


class _RaiseOnError(ErrorListener):
    def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any) -> None:
        raise ValueError(f"column {column + 1}: {msg}")


def check_syntax(expression: str) -> None:
    """Parse strictly (fhirpathpy's own parser recovers from syntax errors silently)."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_RaiseOnError())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_RaiseOnError())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise ValueError(
            f"unexpected '{parser.getCurrentToken().text}' at column {parser.getCurrentToken().column + 1}"
        )


def check_definition(resource: dict[str, Any]) -> None:
    """Refuse a SearchParameter this server could not honour, naming what is wrong."""
    if resource.get("type") not in SUPPORTED_TYPES:
        raise FhirError(400, "not-supported", f"SearchParameter.type '{resource.get('type')}' cannot be indexed")
    expression = resource.get("expression")
    if resource.get("type") != "composite":
        if not isinstance(expression, str):
            raise FhirError(400, "required", "SearchParameter.expression is required", expression=["expression"])
        try:
            check_syntax(expression)
        except Exception as exc:
            raise FhirError(
                400,
                "invalid",
                f"SearchParameter.expression does not compile: {exc}",
                expression=["SearchParameter.expression"],
            ) from None
    unknown = [b for b in resource.get("base", []) if not models.is_resource_type(b)]
    if unknown:
        raise FhirError(400, "value", f"SearchParameter.base names unknown types: {', '.join(unknown)}")


def from_resource(resource: dict[str, Any]) -> list[SearchParam]:
    return [
        SearchParam(
            code=resource["code"],
            base=base,
            type=resource["type"],
            expression=own_alternatives(resource.get("expression"), base),
            targets=tuple(resource.get("target", ())),
            url=resource.get("url", ""),
            components=tuple(resource.get("component", ())),
        )
        for base in resource.get("base", [])
        if models.is_resource_type(base)
    ]


def own_alternatives(expression: str | None, base: str) -> str | None:
    """The alternatives of a union that can select anything on ``base`` (``Flag.code`` for Flag, not
    ``Observation.code``): each is evaluated on every write of the type, so the others are only cost.  Alternatives
    not headed by a resource type (``Resource.meta``, ``extension(...)``) stay."""
    if not expression:
        return expression
    kept = []
    for part in split_union(expression):
        head = re.match(r"\(?([A-Z][A-Za-z]+)\b", part)
        if (
            head is None
            or head[1] == base
            or head[1] in ("Resource", "DomainResource")
            or not models.is_resource_type(head[1])
        ):
            kept.append(part)
    return " | ".join(kept) if kept else expression


# How long another server process (another instance on the same database) may go on without a SearchParameter
# created or changed elsewhere: the bound stated in docs/architecture.md, tested in tests/ops/test_instances.py.
REFRESH_SECONDS = 5.0


class CustomParameters:
    def __init__(self, repo: Any, registry: Registry, interval: float = REFRESH_SECONDS) -> None:
        self.repo = repo
        self.registry = registry
        self.interval = interval
        self._stamp: Any = None
        self._checked = 0.0
        self._eager_until = 0.0
        self._lock = threading.Lock()

    def mark_changed(self) -> None:
        """This process is writing a SearchParameter: check on every request until the commit shows (the write
        may still roll back, so the eager checking stops after a while)."""
        self._eager_until = time.monotonic() + 30

    def refresh_if_stale(self) -> None:
        now = time.monotonic()
        eager = now < self._eager_until
        if not eager and now - self._checked < self.interval:
            return
        with self._lock:
            stamp = self.repo.type_stamp("SearchParameter")
            if stamp != self._stamp:
                self._reload()
                self._stamp = stamp
                self._eager_until = 0.0
            self._checked = time.monotonic()

    def _reload(self) -> None:
        custom: list[SearchParam] = []
        for stored in self.repo.all_current("SearchParameter"):
            resource = fhirjson.loads_stored(stored.content or "{}")
            if resource.get("status") == "retired":
                continue
            try:
                check_definition(resource)
            except FhirError as err:
                log.warning("SearchParameter/%s ignored: %s", stored.id, err.issues[0].diagnostics)
                continue
            custom.extend(from_resource(resource))
        self.registry.set_custom(custom)
        log.info("search registry reloaded with %d custom parameters", len(custom))

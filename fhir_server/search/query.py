"""Parse a search request (``Type?param=value&...``) into a SearchQuery the store can run.

Repeated parameters AND together, comma-separated values OR together.  Chains (``subject:Patient.birthdate``)
and reverse chains (``_has:Observation:patient:code``) nest a clause on another type.  Unknown parameters are
reported back (or refused with ``Prefer: handling=strict``); malformed values are always a 400 naming the
parameter.  Sizes are capped so that no request can ask for an unbounded amount of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from fhir_server import models
from fhir_server.errors import FhirError
from fhir_server.search.conditions import Condition, MissingMatch, TokenMatch
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.types import MODULES, SearchValueError
from fhir_server.search.types.common import split_unescaped, unescape

# Parameters that shape the result rather than select resources.
RESULT_PARAMS = {
    "_count",
    "_total",
    "_summary",
    "_elements",
    "_sort",
    "_format",
    "_pretty",
    "_cursor",
    "_include",
    "_revinclude",
}
MAX_OR_VALUES = 100
MAX_CLAUSES = 40
MAX_CHAIN_DEPTH = 3
MAX_INCLUDES = 10


@dataclass(frozen=True)
class Clause:
    param: SearchParam
    conditions: tuple[Condition, ...]  # OR
    negate: bool = False  # :not


@dataclass(frozen=True)
class CompositeClause:
    """``code-value-quantity=s|c$gt5``: each OR alternative lists one condition per component, all of which must
    hold within the same element."""

    param: SearchParam
    alternatives: tuple[tuple[tuple[SearchParam, Condition], ...], ...]


@dataclass(frozen=True)
class ChainClause:
    """``ref.param=value``: the reference ``ref`` points at a ``target_type`` resource matching ``inner``."""

    reference: SearchParam
    target_type: str
    inner: AnyClause


@dataclass(frozen=True)
class HasClause:
    """``_has:Source:ref:param=value``: some Source resource whose ``ref`` points here matches ``inner``."""

    source_type: str
    reference: SearchParam
    inner: AnyClause


@dataclass(frozen=True)
class CompartmentClause:
    """``/Patient/{id}/{type}``: the resource refers to the compartment owner through one of ``params``."""

    owner_type: str
    owner_id: str
    params: tuple[SearchParam, ...]
    # Access control: the resource refers to no *other* owner through these params either (a QuestionnaireResponse
    # with author A and subject B is in both compartments, and is neither patient's alone).
    exclusive: bool = False


@dataclass(frozen=True)
class OrClause:
    """Any of several clauses (a chain whose reference may point at several types)."""

    alternatives: tuple[AnyClause, ...]


@dataclass(frozen=True)
class AllClause:
    """Every one of several clauses (access control narrows a chain's or _has's inner search with it)."""

    parts: tuple[AnyClause, ...]


AnyClause = Clause | CompositeClause | ChainClause | HasClause | CompartmentClause | OrClause | AllClause


@dataclass(frozen=True)
class SortKey:
    param: SearchParam
    descending: bool


@dataclass(frozen=True)
class Include:
    source_type: str  # the type whose reference is followed (``*`` for any)
    param: SearchParam | None  # None for ``*``
    target_type: str | None
    reverse: bool
    iterate: bool


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[AnyClause] = field(default_factory=list)
    count: int = 20
    total: str = "none"  # none | estimate | accurate
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    cursor: str | None = None
    sort: list[SortKey] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def reaches_other_types(self) -> bool:
        """Chains, _has and includes read other resource types too."""
        return bool(self.includes) or any(not isinstance(c, Clause | CompositeClause) for c in self.clauses)

    def single_token_match(self) -> tuple[str, str, str] | None:
        """(param, system, code) when the query is exactly one ``param=system|code`` token clause."""
        if len(self.clauses) != 1 or self.sort or self.includes:
            return None
        clause = self.clauses[0]
        if not isinstance(clause, Clause) or clause.negate or len(clause.conditions) != 1:
            return None
        condition = clause.conditions[0]
        if clause.param.type != "token" or clause.param.code.startswith("_") or not isinstance(condition, TokenMatch):
            return None
        if not condition.system or not condition.code or condition.text is not None:
            return None
        return clause.param.code, condition.system, condition.code


class SearchParser:
    def __init__(self, registry: Registry, *, strict: bool = False) -> None:
        self.registry = registry
        self.strict = strict

    def parse(
        self, resource_type: str, params: Sequence[tuple[str, str]], *, default_count: int = 20, max_count: int = 1000
    ) -> SearchQuery:
        query = SearchQuery(resource_type, count=default_count)
        for key, raw in params:
            if "\x00" in key or "\x00" in raw:  # PostgreSQL refuses NUL and SQLite cuts strings at it
                raise FhirError(400, "value", f"Search parameter '{key[:64]!r}' contains a NUL character")
            if raw == "":
                continue  # R4 (search.html#errors): "Empty parameters are not an error - they are just ignored"
            name = key.partition(":")[0]
            if name in RESULT_PARAMS:
                self._result_param(query, key, raw, max_count)
                continue
            clause = self.clause(resource_type, key, raw, depth=0)
            if clause is None:
                query.ignored.append(key[:64])
            else:
                query.clauses.append(clause)
        if len(query.clauses) > MAX_CLAUSES:
            raise FhirError(400, "too-costly", f"At most {MAX_CLAUSES} search parameters may be combined")
        if query.count == 0 and query.summary is None:
            query.summary = "count"  # R4 (search.html#count): "_count=0 ... treated as _summary=count"
        return query

    # -- selection clauses --------------------------------------------------------------------------------
    def clause(self, resource_type: str, key: str, raw: str, depth: int) -> AnyClause | None:
        if depth > MAX_CHAIN_DEPTH:
            raise FhirError(400, "too-costly", f"'{key[:80]}': chains may be at most {MAX_CHAIN_DEPTH} deep")
        if key.startswith("_has:"):
            return self._has(resource_type, key, raw, depth)
        head, dot, rest = key.partition(".")
        name, _, modifier = head.partition(":")
        param = self.registry.get(resource_type, name)
        if param is not None and param.type == "composite":
            return self._composite(param, modifier or None, raw, key)
        if param is None and (declined := self.registry.declined(resource_type, name)):
            raise FhirError(400, "not-supported", declined)
        if param is None or (param.type not in MODULES and param.code != "_id"):
            return self._unknown(key, resource_type)
        if dot:
            return self._chain(resource_type, param, modifier or None, rest, key, raw, depth)
        return self._simple(param, modifier or None, raw, key)

    def _simple(self, param: SearchParam, modifier: str | None, raw: str, key: str) -> Clause:
        if modifier == "identifier" and param.type == "reference":
            # Reference.identifier is indexed as a token under "<code>:identifier"
            return self._simple(replace(param, code=f"{param.code}:identifier", type="token"), None, raw, key)
        if modifier == "of-type" and param.type == "token":
            of_type = replace(
                param, code=f"{param.code}:of-type", sources=tuple(f"{source}:of-type" for source in param.sources)
            )
            return Clause(of_type, tuple(_of_type(v, key) for v in _values(raw, key)))
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise FhirError(400, "value", f"'{key}' must be true or false", expression=[key])
            return Clause(param, (MissingMatch(raw == "true"),))
        values = _values(raw, key)
        negate = modifier == "not"
        module = MODULES[param.type]
        conditions = []
        for value in values:
            try:
                if param.type == "reference":
                    conditions.append(module.parse(value, modifier, param.targets))
                else:
                    conditions.append(module.parse(value, None if negate else modifier))
            except SearchValueError as exc:
                raise FhirError(400, "value", f"Invalid value for search parameter '{key}': {exc}") from None
        return Clause(param, tuple(conditions), negate)

    def _composite(self, param: SearchParam, modifier: str | None, raw: str, key: str) -> CompositeClause | None:
        components = self.registry.components(param)
        if not components:
            return self._unknown(key, param.base)
        if modifier is not None:
            raise FhirError(400, "value", f"Composite parameter '{param.code}' takes no modifiers")
        alternatives = []
        for value in split_unescaped(raw, ",")[: MAX_OR_VALUES + 1]:
            parts = split_unescaped(value, "$")
            if len(parts) != len(components):
                raise FhirError(400, "value", f"'{key}' needs {len(components)} '$'-separated values, got {len(parts)}")
            conditions = []
            for (component, _), part in zip(components, parts, strict=True):
                try:
                    conditions.append((component, MODULES[component.type].parse(part, None)))
                except SearchValueError as exc:
                    raise FhirError(400, "value", f"Invalid value for search parameter '{key}': {exc}") from None
            alternatives.append(tuple(conditions))
        if len(alternatives) > MAX_OR_VALUES:
            raise FhirError(400, "too-costly", f"'{key}' has more than {MAX_OR_VALUES} alternative values")
        return CompositeClause(param, tuple(alternatives))

    def _chain(
        self, resource_type: str, param: SearchParam, modifier: str | None, rest: str, key: str, raw: str, depth: int
    ) -> AnyClause | None:
        if param.type != "reference":
            raise FhirError(400, "invalid", f"'{key[:80]}': only reference parameters can be chained")
        if modifier is not None and not models.is_resource_type(modifier):
            raise FhirError(400, "invalid", f"'{key[:80]}': ':{modifier}' is not a resource type")
        candidates = (modifier,) if modifier else param.targets
        chained_name = rest.partition(".")[0].partition(":")[0]
        targets = tuple(t for t in candidates if self.registry.get(t, chained_name) is not None)
        if not targets:
            return self._unknown(key, resource_type)
        inner = [self.clause(target, rest, raw, depth + 1) for target in targets]
        if any(i is None for i in inner):
            return self._unknown(key, resource_type)
        # One chain per possible target type, ORed (``subject.name`` may mean a Patient's or a Group's name).
        chains = tuple(ChainClause(param, t, i) for t, i in zip(targets, inner, strict=True))
        return chains[0] if len(chains) == 1 else OrClause(chains)

    def _has(self, resource_type: str, key: str, raw: str, depth: int) -> AnyClause | None:
        parts = key.split(":", 3)
        if len(parts) < 4 or not parts[3]:
            raise FhirError(400, "invalid", f"'{key[:80]}' must be _has:Type:reference:parameter")
        _, source_type, ref_name, inner_key = parts
        if not models.is_resource_type(source_type):
            raise FhirError(400, "invalid", f"'{key[:80]}': '{source_type}' is not a resource type")
        reference = self.registry.get(source_type, ref_name)
        if reference is None or reference.type != "reference":
            return self._unknown(key, resource_type)
        inner = self.clause(source_type, inner_key, raw, depth + 1)
        return None if inner is None else HasClause(source_type, reference, inner)

    def _unknown(self, key: str, resource_type: str) -> None:
        if self.strict:
            raise FhirError(
                400, "not-supported", f"Unknown or unsupported search parameter '{key[:64]}' for {resource_type}"
            )
        return None

    # -- result parameters ------------------------------------------------------------------------------
    def _result_param(self, query: SearchQuery, key: str, raw: str, max_count: int) -> None:
        name, _, modifier = key.partition(":")
        if name == "_count":
            if not raw.isdigit() or len(raw) > 9:
                raise FhirError(400, "value", f"_count must be a non-negative integer, not '{raw[:20]}'")
            query.count = min(int(raw), max_count)
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise FhirError(400, "value", "_total must be none, estimate or accurate")
            query.total = raw
        elif name == "_summary":
            if raw not in ("true", "false", "count", "text", "data"):
                raise FhirError(400, "value", "_summary must be true, false, count, text or data")
            query.summary = None if raw == "false" else raw
        elif name == "_elements":
            query.elements.extend(e.strip() for e in raw.split(",") if e.strip())
        elif name == "_cursor":
            query.cursor = raw
        elif name == "_sort":
            query.sort.extend(self._sort_keys(query.resource_type, raw))
        elif name in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise FhirError(400, "value", f"{name} takes only the :iterate modifier")
            query.includes.append(self._include(raw, reverse=name == "_revinclude", iterate=bool(modifier)))
            if len(query.includes) > MAX_INCLUDES:
                raise FhirError(400, "too-costly", f"At most {MAX_INCLUDES} _include/_revinclude may be given")

    def _sort_keys(self, resource_type: str, raw: str) -> list[SortKey]:
        keys = []
        for part in (p.strip() for p in raw.split(",")):
            descending = part.startswith("-")
            code = part[1:] if descending else part
            param = self.registry.get(resource_type, code)
            if param is None or param.type not in (*MODULES, "token") or param.type == "composite":
                raise FhirError(400, "value", f"Cannot sort {resource_type} by '{code[:64]}'")
            keys.append(SortKey(param, descending))
        return keys

    def _include(self, raw: str, *, reverse: bool, iterate: bool) -> Include:
        if raw == "*":
            return Include("*", None, None, reverse, iterate)
        parts = raw.split(":")
        if len(parts) not in (2, 3) or not models.is_resource_type(parts[0]):
            raise FhirError(400, "value", f"'{raw[:80]}' must be Type:parameter[:TargetType] or *")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if target is not None and not models.is_resource_type(target):
            raise FhirError(400, "value", f"'{target[:64]}' is not a resource type")
        if code == "*":
            return Include(source, None, target, reverse, iterate)
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            raise FhirError(400, "value", f"'{source}:{code[:64]}' is not a reference search parameter")
        return Include(source, param, target, reverse, iterate)


def _values(raw: str, key: str) -> list[str]:
    values = split_unescaped(raw, ",")
    if len(values) > MAX_OR_VALUES:
        raise FhirError(400, "too-costly", f"'{key}' has more than {MAX_OR_VALUES} alternative values")
    return values


def _of_type(value: str, key: str) -> TokenMatch:
    parts = [unescape(p) for p in split_unescaped(value, "|")]
    if len(parts) != 3 or not all(parts[1:]):
        raise FhirError(400, "value", f"'{key}' takes typeSystem|typeCode|value")
    return TokenMatch(f"{parts[0]}|{parts[1]}", parts[2])


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    registry: Registry,
    *,
    default_count: int = 20,
    max_count: int = 1000,
    strict: bool = False,
) -> SearchQuery:
    return SearchParser(registry, strict=strict).parse(
        resource_type, params, default_count=default_count, max_count=max_count
    )

"""Evaluate search-parameter expressions fast.

Most R4 search expressions are plain paths (``Observation.subject``), paths with a reference-type filter
(``Observation.subject.where(resolve() is Patient)``) or a choice type (``(Observation.value as Quantity)``).
Those compile to a tiny walker (microseconds); anything else falls back to fhirpathpy, compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from fhir_server import models

Evaluator = Callable[[dict[str, Any]], list[Any]]
ComponentEvaluator = Callable[[Any, dict[str, Any]], list[Any]]  # (the composite's element, the resource)
R4_MODEL = fhirpath_models["r4"]

_SIMPLE = re.compile(r"[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+")
_RESOLVE_IS = re.compile(r"(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)")
_AS = re.compile(r"\(?(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)(?: as |\.as\()(?P<type>[A-Za-z]+)\)?\)?")
_AS_THEN = re.compile(
    r"\((?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+) as (?P<type>[A-Za-z]+)\)(?P<rest>(?:\.[a-zA-Z]+)+)"
)
_EXISTS_NOT_FALSE = re.compile(r"(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)\.exists\(\) and (?P=path) != false")
_EXTENSION_VALUE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)\.extension\('(?P<url>[^'\\]+)'\)\.value")
_WHERE_EQ = re.compile(
    r"(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)\.where\((?P<key>[a-zA-Z]+) ?= ?'(?P<value>[^']*)'\)"
)


@dataclass(frozen=True)
class _Path:
    steps: tuple[tuple[str, ...], ...]  # after the resource type; each step lists the JSON keys it may be
    reference_type: str | None = None  # keep only references to this type
    where_equals: tuple[str, str] | None = None  # keep only nodes whose key equals the value
    exists_not_false: bool = False  # boolean test on a choice element (Patient.deceased)

    def __call__(self, resource: dict[str, Any]) -> list[Any]:
        if self.exists_not_false:  # ``X.exists() and X != false``: a boolean for every resource, false when absent
            present = [resource[k] for k in self.steps[-1] if k in resource]
            return [bool(present) and present[0] is not False]
        nodes: list[Any] = [resource]
        for keys in self.steps:
            nxt: list[Any] = []
            for node in nodes:
                if isinstance(node, dict):
                    for key in keys:
                        value = node.get(key)
                        if isinstance(value, list):
                            nxt.extend(v for v in value if v is not None)
                        elif value is not None:
                            nxt.append(value)
            nodes = nxt
            if not nodes:
                return nodes
        if self.reference_type:
            nodes = [n for n in nodes if _reference_type(n) == self.reference_type]
        if self.where_equals:
            key, value = self.where_equals
            nodes = [n for n in nodes if isinstance(n, dict) and n.get(key) == value]
        return nodes


def _reference_type(node: Any) -> str | None:
    ref = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-2] if len(parts) >= 2 else None


def split_union(expression: str) -> list[str]:
    """The alternatives of a FHIRPath union (`a | b | (c | d)`: the top-level `|` only)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expression):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _steps(path: str, choice_suffix: str | None = None, rest: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """JSON keys for each step of ``Type.a.b``: a choice element (``Observation.effective``) may be any of its
    typed keys (effectiveDateTime, effectivePeriod, ...), known from the model's one-of-many groups."""
    names = path.split(".")
    model = _model(names[0])
    out: list[tuple[str, ...]] = []
    for index, name in enumerate(names[1:]):
        last = index == len(names) - 2
        if last and choice_suffix:
            out.append(_typed_keys(model, name, choice_suffix))
            model = _child_model(model, out[-1][0])
            continue
        choices = _choice_keys(model, name) if model is not None else ()
        out.append(choices or (name,))
        model = _child_model(model, (choices or (name,))[0]) if model is not None else None
    out.extend((step,) for step in rest)
    return tuple(out)


def _subtypes(type_name: str) -> list[str]:
    """The FHIR types that specialise ``type_name`` (canonical, url, oid and uuid are uris; code, id and markdown
    strings; Age and Duration Quantities), from fhirpathpy's R4 model: ``x as uri`` holds them too."""
    children = [child for child, parent in R4_MODEL["type2Parent"].items() if parent == type_name]
    return [grandchild for child in children for grandchild in (child, *_subtypes(child))]


def _typed_keys(model: type | None, name: str, type_name: str) -> tuple[str, ...]:
    """The JSON keys of choice element ``name`` ``as`` a type: its own typed key, and those of the type's
    specialisations that the element allows (``ConceptMap.source as uri``: sourceUri and sourceCanonical)."""
    own = name + type_name[0].upper() + type_name[1:]
    allowed = _choice_keys(model, name) if model is not None else ()
    more = (name + sub[0].upper() + sub[1:] for sub in _subtypes(type_name))
    return (own, *(key for key in more if key in allowed and key != own))


def _model(name: str) -> type | None:
    try:
        return models.model_class(name)
    except ValueError:
        return None


def _choice_keys(model: type, base: str) -> tuple[str, ...]:
    keys = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("one_of_many") == base:
            keys.append(field.alias or name)
    return tuple(keys)


def _child_model(model: type | None, key: str) -> type | None:
    if model is None:
        return None
    field = models.fields_by_key(model).get(key)
    return models.element_model(field.annotation) if field is not None else None


def _compile_one(expression: str) -> Evaluator:
    bare = expression.strip()
    if bare.startswith("(") and bare.endswith(")") and bare.count("(") == 1:
        bare = bare[1:-1].strip()
    if re.fullmatch(r"[A-Z][A-Za-z]+", bare):  # the resource itself (a composite over the whole resource)
        return lambda resource: [resource]
    if _SIMPLE.fullmatch(bare):
        return _Path(_steps(bare))
    match = _RESOLVE_IS.fullmatch(bare)
    if match:
        return _Path(_steps(match["path"]), reference_type=match["type"])
    match = _AS.fullmatch(bare)
    if match:
        return _Path(_steps(match["path"], match["type"]))
    match = _AS_THEN.fullmatch(bare)
    if match:
        return _Path(_steps(match["path"], match["type"], tuple(match["rest"].split(".")[1:])))
    match = _EXISTS_NOT_FALSE.fullmatch(bare)
    if match and match["path"].count(".") == 1:
        return _Path(_steps(match["path"]), exists_not_false=True)
    match = _WHERE_EQ.fullmatch(bare)
    if match:
        return _Path(_steps(match["path"]), where_equals=(match["key"], match["value"]))
    match = _EXTENSION_VALUE.fullmatch(bare)
    if match:  # a project's own search parameter on an extension (terminology/searchparameter-session-*.json)
        return _extension_values(match["type"], match["url"])
    compiled = fhirpathpy.compile(expression, model=R4_MODEL)  # the model resolves choice types (value → valueString)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            return [v for v in compiled(resource) if v is not None]
        except Exception:  # a data-dependent FHIRPath failure indexes nothing rather than failing the write
            return []

    return evaluate


def _extension_values(resource_type: str, url: str) -> Evaluator:
    """``Type.extension('url').value``: the value[x] of the resource's own extensions with that url."""

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        if resource.get("resourceType") != resource_type:
            return []
        found = []
        for extension in resource.get("extension") or ():
            if isinstance(extension, dict) and extension.get("url") == url:
                found.extend(v for k, v in extension.items() if k.startswith("value") and v is not None)
        return found

    return evaluate


@cache
def compile_expression(expression: str) -> Evaluator:
    alternatives = [_compile_one(part) for part in split_union(expression)]
    if len(alternatives) == 1:
        return alternatives[0]

    def union(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for alternative in alternatives:
            out.extend(alternative(resource))
        return out

    return union


RELATIVE_ROOT = "Node"  # not a FHIR type: relative expressions compile without choice-type expansion


@cache
def compile_relative(expression: str) -> Evaluator:
    """A composite component's expression, relative to the node its composite selected (``value.as(Quantity)``)."""
    return compile_expression(" | ".join(f"{RELATIVE_ROOT}.{part}" for part in split_union(expression)))


RESOURCE_VARIABLE = "%resource."


def _relative_to(composite: str, component: str) -> _Path | None:
    """``component`` as a walk from the elements ``composite`` selects, typed by the composite's path: a choice
    element there expands to its typed keys (``Group.characteristic`` + ``value``: valueCodeableConcept,
    valueBoolean, ...), which a walk from an untyped node cannot know.  None when the composite is not a plain
    path (or its alternatives disagree), for compile_relative to take."""
    walks = set()
    for base in split_union(composite):
        base = base.strip("() ")
        if not (_SIMPLE.fullmatch(base) or re.fullmatch(r"[A-Z][A-Za-z]+", base)):
            return None
        absolute = _compile_one(f"{base}.{component}")
        if not isinstance(absolute, _Path) or absolute.exists_not_false:
            return None
        depth = base.count(".")
        walks.add(_Path(absolute.steps[depth:], absolute.reference_type, absolute.where_equals))
    return walks.pop() if len(walks) == 1 else None


@cache
def compile_component(resource_type: str, composite: str, component: str) -> ComponentEvaluator:
    """A composite parameter's component expression, evaluated on each element its composite expression selected.
    ``%resource.x`` reads the resource itself (MolecularSequence's ``variant`` composites take the chromosome from
    ``%resource.referenceSeq``): the same for every element."""
    parts: list[ComponentEvaluator] = []
    for alternative in split_union(component):
        if alternative.startswith(RESOURCE_VARIABLE):
            whole = compile_expression(f"{resource_type}.{alternative[len(RESOURCE_VARIABLE) :]}")
            parts.append(lambda node, resource, evaluate=whole: evaluate(resource))
        else:
            walk = _relative_to(composite, alternative) or compile_relative(alternative)
            parts.append(lambda node, resource, evaluate=walk: evaluate(node))
    if len(parts) == 1:
        return parts[0]
    return lambda node, resource: [value for part in parts for value in part(node, resource)]

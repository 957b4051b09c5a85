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
R4_MODEL = fhirpath_models["r4"]

_SIMPLE = re.compile(r"[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+")
_RESOLVE_IS = re.compile(r"(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)")
_AS = re.compile(r"\(?(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)(?: as |\.as\()(?P<type>[A-Za-z]+)\)?\)?")
_AS_THEN = re.compile(
    r"\((?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+) as (?P<type>[A-Za-z]+)\)(?P<rest>(?:\.[a-zA-Z]+)+)"
)
_EXISTS_NOT_FALSE = re.compile(r"(?P<path>[A-Za-z]+(?:\.[a-zA-Z][A-Za-z0-9]*)+)\.exists\(\) and (?P=path) != false")
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
        if self.exists_not_false:
            present = [resource[k] for k in self.steps[-1] if k in resource]
            return [True] if present and present[0] is not False else []
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


def _split_union(expression: str) -> list[str]:
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
            out.append((name + choice_suffix[0].upper() + choice_suffix[1:],))
            model = _child_model(model, out[-1][0])
            continue
        choices = _choice_keys(model, name) if model is not None else ()
        out.append(choices or (name,))
        model = _child_model(model, (choices or (name,))[0]) if model is not None else None
    out.extend((step,) for step in rest)
    return tuple(out)


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
    compiled = fhirpathpy.compile(expression, model=R4_MODEL)  # the model resolves choice types (value → valueString)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            return [v for v in compiled(resource) if v is not None]
        except Exception:  # a data-dependent FHIRPath failure indexes nothing rather than failing the write
            return []

    return evaluate


@cache
def compile_expression(expression: str) -> Evaluator:
    alternatives = [_compile_one(part) for part in _split_union(expression)]
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
    return compile_expression(" | ".join(f"{RELATIVE_ROOT}.{part}" for part in _split_union(expression)))

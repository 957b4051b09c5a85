"""Native evaluation of the SDC expression shapes our Questionnaires use, giving exactly what fhirpathpy gives.

fhirpathpy wraps every node it walks, so ``%questionnaire.item.where(linkId='x')...`` costs ~10 ms on the WAI-SR
(its answerOptions re-run the response lookup once each), and every submission pays it.  The shipped expressions
come in a few fixed shapes, so each shape is a regex (named groups) plus a function doing the same walk on the JSON.

Exactness is the contract (sdc.py's check and an SDC renderer's score must agree): results are the same lists with
the same types (fhirpathpy gives a float as ``Decimal(str(f))``, an integer as ``int``, ``16 / 4`` as
``Decimal('4.0')``), and an input fhirpathpy would refuse raises ``WouldRaise``.  Whatever this module does not
reproduce with certainty (``_valueX`` primitive extensions, a nested ``resourceType`` that retypes a node in
fhirpathpy, non-string linkIds, odd variable names...) raises ``Unsupported`` inside and ``evaluate`` returns None,
so the caller falls back to fhirpathpy.  tests/validation/test_sdc_fast_path.py holds the two to each other.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer

# Choice types in the order fhirpathpy tries them (the first present wins), read from its own R4 model, as
# ``valueX`` / ``_valueX`` key → (rank, is ``_valueX``): a node is read by its own few keys, not by trying each type's
# (valueCoding is the 10th of 12 answer types; Extension.value has 50).
Choice = dict[str, tuple[int, bool]]


def _value_keys(path: str) -> Choice:
    keys: Choice = {}
    for rank, kind in enumerate(models["r4"]["choiceTypePaths"][path]):
        keys[f"value{kind}"] = (rank, False)
        keys[f"_value{kind}"] = (rank, True)
    return keys


ANSWER_VALUE = _value_keys("QuestionnaireResponse.item.answer.value")
OPTION_VALUE = _value_keys("Questionnaire.item.answerOption.value")
EXTENSION_VALUE = _value_keys("Extension.value")

# fhirpathpy's own variables and the two evaluate() passes: a Questionnaire variable with one of these names would
# shadow what the shapes assume %resource / %questionnaire are.
_RESERVED = frozenset({"resource", "questionnaire", "context", "ucum"})

Result = list[Any]
Evaluator = Callable[["Roots", dict[str, Any]], Result]


class Unsupported(Exception):
    """This input is outside what the fast path reproduces with certainty: let fhirpathpy evaluate it."""


class WouldRaise(Exception):
    """fhirpathpy raises on this input (e.g. ``+`` on a variable holding two answers)."""


def evaluate(
    expression: str, response: Any, questionnaire: Any, env: dict[str, Any], roots: Roots | None = None
) -> Result | None:
    """fhirpathpy's result for ``expression``, or None when no shape matches or the data is unusual (then ask
    fhirpathpy).  Raises WouldRaise where fhirpathpy raises.  ``roots``: shared with earlier expressions."""
    evaluator = compiled(expression)
    if evaluator is None or env.keys() & _RESERVED:
        return None
    if roots is None or roots.response is not response or roots.questionnaire is not questionnaire:
        roots = Roots(response, questionnaire)
    try:
        return evaluator(roots, env)
    except Unsupported:
        return None


@lru_cache(maxsize=1024)  # one regex match per distinct expression; stored Questionnaires bring their own
def compiled(expression: str) -> Evaluator | None:
    """The native evaluator of ``expression``, or None when it has none of the known shapes."""
    for shape in SHAPES:
        found = shape.pattern.fullmatch(expression)
        if found and (evaluator := shape.build(found.groupdict())) is not None:
            return evaluator
    return None


# --- fhirpathpy's navigation, on plain JSON ---------------------------------------------------------------------
# fhirpathpy types a node by its path from the root (that is how ``value`` finds ``valueCoding``), but a dict with
# a ``resourceType`` is typed by it instead: every node read here must not have one, or fhirpathpy decides.
# Non-objects (null, a list in a list) have no members in fhirpathpy, so navigation skips them; only the final
# values (``_output``) and compared ones (``_equal``) must be plain.


def _typed(node: dict[str, Any]) -> dict[str, Any]:
    if "resourceType" in node:
        raise Unsupported
    return node


def _add(out: Result, value: Any) -> None:
    """Append a member's value as fhirpathpy does: a list adds its elements; None and [] add nothing."""
    if isinstance(value, list):
        out.extend(value)
    elif value is not None:
        out.append(value)


def _member(nodes: Result, key: str) -> Result:
    """``nodes.key``; ``_key`` (a primitive's extensions) would add nodes too: not handled."""
    out: Result = []
    for node in nodes:
        if isinstance(node, dict):
            if _typed(node).get("_" + key) is not None:
                raise Unsupported
            _add(out, node.get(key))
    return out


def _root_items(resource: Any, resource_type: str) -> Result:
    """``%resource.item`` / ``%questionnaire.item``: the roots' types decide how everything below resolves."""
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise Unsupported
    if resource.get("_item") is not None:
        raise Unsupported
    out: Result = []
    _add(out, resource.get("item"))
    return out


def _choice(nodes: Result, keys: Choice) -> Result:
    """``nodes.value`` on a choice element: the first ``value<Type>`` present, in the model's order (a
    ``_value<Type>`` at or before it is not handled: fhirpathpy would read its extensions)."""
    out: Result = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        _typed(node)
        first, value, extended = len(keys), None, len(keys)  # ranks: past the last type when absent
        for key, item in node.items():
            known = keys.get(key)
            if known is None or item is None:
                continue
            rank, extension = known
            if extension:
                extended = min(extended, rank)
            elif rank < first:
                first, value = rank, item
        if extended <= first and extended < len(keys):
            raise Unsupported
        if value is not None:
            _add(out, value)
    return out


def _with_link_id(nodes: Result, link_id: str) -> Result:
    """``nodes.where(linkId = 'x')`` (an item without a linkId compares empty: not kept)."""
    out: Result = []
    for node in nodes:
        if isinstance(node, dict):  # (the hottest loop: checks written out)
            if "resourceType" in node:
                raise Unsupported
            own = node.get("linkId")
            if own == link_id:
                if node.get("_linkId") is not None:
                    raise Unsupported  # two linkId nodes: not equal to one string
                out.append(node)
            elif own is not None and own.__class__ is not str:
                raise Unsupported  # ['x'] would equal 'x' there
    return out


def _by_link_id(nodes: Result) -> dict[str, Result] | None:
    """``nodes.where(linkId = 'x')`` for every x at once, or None when a node would make ``_with_link_id`` raise
    (a resourceType, a linkId that is not a string or has extensions): those are left to it."""
    index: dict[str, Result] = {}
    for node in nodes:
        if isinstance(node, dict):
            if "resourceType" in node or node.get("_linkId") is not None:
                return None
            own = node.get("linkId")
            if own is not None:
                if own.__class__ is not str:
                    return None
                index.setdefault(own, []).append(node)
    return index


class Roots:
    """``%resource`` and ``%questionnaire`` with their root items by linkId, indexed once for all the expressions
    evaluated on them (``sdc.calculated_values``): each WAI-SR variable finds its item in both, 24 scans."""

    def __init__(self, response: Any, questionnaire: Any) -> None:
        self.response = response
        self.questionnaire = questionnaire
        self._indexes: dict[str, dict[str, Result] | None] = {}

    def items(self, resource_type: str, link_id: str) -> Result:
        """``%resource.item.where(linkId = 'x')`` or ``%questionnaire``'s (a shared list: read it only)."""
        root = self.response if resource_type == "QuestionnaireResponse" else self.questionnaire
        items = _root_items(root, resource_type)  # raises for a root fhirpathpy would read by other rules
        if resource_type not in self._indexes:
            self._indexes[resource_type] = _by_link_id(items)
        index = self._indexes[resource_type]
        return _with_link_id(items, link_id) if index is None else index.get(link_id, [])


_SCALARS = (str, int, float)  # what JSON holds besides objects, arrays and null (bool is an int)
_VALUES = (*_SCALARS, dict, Decimal)  # in results: JSON data, and Decimals from arithmetic or fhirpathpy
_NUMBERS = (int, Decimal)


def _equal(left: Result, right: Result) -> bool:
    """FHIRPath ``=`` as fhirpathpy has it: false when a side is empty or the sizes differ, else the first items'
    data compared with Python's ``==`` (scalars only: objects may become Quantities there)."""
    if not left or not right or len(left) != len(right):
        return False
    if not (isinstance(left[0], _SCALARS) and isinstance(right[0], _SCALARS)):
        raise Unsupported
    return bool(left[0] == right[0])


def _extension(nodes: Result, url: str) -> Result:
    """``nodes.extension(url)``: the first extension with that url, per node."""
    out: Result = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        extensions = _typed(node).get("extension", [])
        # fhirpathpy reads every entry's url with e["url"]: a malformed list makes it raise; let it.
        if not isinstance(extensions, list) or not all(isinstance(e, dict) and "url" in e for e in extensions):
            raise Unsupported
        _add(out, next((e for e in extensions if e["url"] == url), None))
    return out


def _output(values: Result) -> Result:
    """fhirpathpy's final conversion: floats become ``Decimal(str(f))`` (at any depth), objects are copied, and
    list entries that are only ``{"extension": ...}`` (a primitive's extensions) are dropped."""
    if not all(isinstance(v, _VALUES) for v in values):
        raise Unsupported  # a null or a list in a list comes out by other rules
    return _converted(values)


def _converted(value: Any) -> Any:
    if isinstance(value, list):
        out = [_converted(v) for v in value]
        return [v for v in out if not (isinstance(v, dict) and list(v) == ["extension"])]
    if isinstance(value, dict):
        return {k: _converted(v) for k, v in value.items()}
    if isinstance(value, float):
        return Decimal(str(value))
    return value


def _answers(roots: Roots, link_id: str) -> Result:
    """``%resource.item.where(linkId = 'x').answer``: root-level items only, as written."""
    return _member(roots.items("QuestionnaireResponse", link_id), "answer")


# --- the shapes ---------------------------------------------------------------------------------------------------

# FHIRPath's own lexical rules (not Python's \s and \d, which take more).
_WS = r"[ \t\r\n]*"
_LINK = r"'(?P<{}>[^'\\]*)'"  # a string literal with no escapes (fhirpathpy would unescape them)
_NAME = r"%[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# Words the lexer takes as keywords, not identifiers: ``%and`` or ``%day`` does not parse (the grammar lets these
# four be identifiers).
_IDENTIFIER_WORDS = frozenset({"as", "is", "in", "contains"})
_KEYWORDS = frozenset(w.strip("'") for w in FHIRPathLexer.literalNames if w.strip("'").isalpha()) - _IDENTIFIER_WORDS


def _answer_value(groups: dict[str, str]) -> Evaluator:
    """``%resource.item.where(linkId='x').answer.value``: the answers' values (VAS millimetres, codings...)."""
    link_id = groups["link"]

    def run(roots: Roots, env: dict[str, Any]) -> Result:
        return _output(_choice(_answers(roots, link_id), ANSWER_VALUE))

    return run


def _option_extension(groups: dict[str, str]) -> Evaluator:
    """The ordinalValue (or other extension) of the answerOption whose code the answer chose."""
    option_link, answer_link, url = groups["qlink"], groups["rlink"], groups["url"]

    def run(roots: Roots, env: dict[str, Any]) -> Result:
        options = _member(roots.items("Questionnaire", option_link), "answerOption")
        codes = _member(_choice(_answers(roots, answer_link), ANSWER_VALUE), "code")
        chosen = [o for o in options if _equal(_member(_choice([o], OPTION_VALUE), "code"), codes)]
        return _output(_choice(_extension(chosen, url), EXTENSION_VALUE))

    return run


def _names(text: str) -> list[str]:
    return re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", text)


def _variable(env: dict[str, Any], name: str) -> Result:
    """``%name`` as fhirpathpy reads a variable (None is empty, a single value a singleton)."""
    if name in _RESERVED:
        raise Unsupported
    if name not in env:
        raise WouldRaise(f"Attempting to access an undefined environment variable: {name}")
    value = env[name]
    return [] if value is None else value if isinstance(value, list) else [value]


def _operand(value: Any) -> Any:
    """A value as fhirpathpy's ``+`` and ``/`` see it: a float as ``Decimal(str(f))``.  Variables hold plain JSON
    data and Decimals; anything else (FHIRPath's own types) adds by other rules."""
    if isinstance(value, float):
        return Decimal(str(value))
    if not isinstance(value, _VALUES):
        raise Unsupported
    return value


def _plus(left: Result, right: Result) -> Any:
    """fhirpathpy's ``+`` on two singletons: numbers add, strings join, every other pair raises."""
    if len(left) != 1 or len(right) != 1:
        raise WouldRaise(f"Cannot {left} + {right}")
    a, b = _operand(left[0]), _operand(right[0])
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS) and not isinstance(a, bool) and not isinstance(b, bool):
        return a + b
    raise WouldRaise(f"Cannot {left} + {right}")


def _number(text: str) -> int | Decimal:
    """A FHIRPath number literal as fhirpathpy reads it: ``4`` and ``4.0`` are int 4, ``2.5`` a Decimal."""
    value = Decimal(text)
    return int(value) if value == int(value) else value


def _iif_sum(groups: dict[str, str]) -> Evaluator | None:
    """``iif(%a.exists() and ..., %a + ..., {})`` or ``iif(..., (%a + ...) / n, {})``: a score only when all
    its items are answered."""
    condition = _names(groups["cond"])
    terms = _names(groups["sum"] or groups["psum"])
    divisor = _number(groups["div"]) if groups["div"] else None
    if _KEYWORDS.intersection(condition + terms):
        return None  # fhirpathpy fails to parse it

    def run(roots: Roots, env: dict[str, Any]) -> Result:
        # fhirpathpy evaluates both sides of every 'and', so each variable is looked up (an undefined one raises).
        if not all([bool(_variable(env, name)) for name in condition]):
            return []  # iif's false branch, {}; the sum is not evaluated
        total = _variable(env, terms[0])
        for name in terms[1:]:
            term = _variable(env, name)
            total = [_plus(total, term)] if total and term else []  # '+' with an empty side is empty
        if divisor is None or not total:
            return _output(total)
        # '/' takes one Number: two values (a lone variable) or a string raise; int / int is a float in Python,
        # output as Decimal(str(f)) like fhirpathpy's.
        if len(total) > 1:
            raise WouldRaise(f"Unexpected collection {total}; expected singleton of type Number")
        value = _operand(total[0])
        if not isinstance(value, numbers.Number):
            raise WouldRaise(f"Expected number, got: {value!r}")
        return [] if divisor == 0 else _output([value / divisor])

    return run


@dataclass(frozen=True)
class Shape:
    """One recognised expression shape: ``build`` turns the regex's named groups into its evaluator, once."""

    name: str
    pattern: re.Pattern[str]
    build: Callable[[dict[str, str]], Evaluator | None]  # None: not this shape after all


_SUM = rf"{_NAME}(?:{_WS}\+{_WS}{_NAME})*"
SHAPES: tuple[Shape, ...] = (
    Shape(
        "answer-value",
        re.compile(rf"%resource\.item\.where\(linkId{_WS}={_WS}{_LINK.format('link')}\)\.answer\.value"),
        _answer_value,
    ),
    Shape(
        "option-extension",
        re.compile(
            rf"%questionnaire\.item\.where\(linkId{_WS}={_WS}{_LINK.format('qlink')}\)"
            rf"\.answerOption\.where\(value\.code{_WS}={_WS}"
            rf"%resource\.item\.where\(linkId{_WS}={_WS}{_LINK.format('rlink')}\)\.answer\.value\.code\)"
            rf"\.extension\({_LINK.format('url')}\)\.value"
        ),
        _option_extension,
    ),
    Shape(
        "iif-sum",
        re.compile(
            rf"iif\((?P<cond>{_NAME}\.exists\(\)(?:[ \t\r\n]+and[ \t\r\n]+{_NAME}\.exists\(\))*){_WS},{_WS}"
            rf"(?:(?P<sum>{_SUM})|\({_WS}(?P<psum>{_SUM}){_WS}\){_WS}/{_WS}(?P<div>{_NUMBER})){_WS},{_WS}\{{\}}\)"
        ),
        _iif_sum,
    ),
)

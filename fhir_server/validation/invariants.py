"""The FHIRPath invariants of the R4 definitions (``constraint`` in ``data/r4_types.json``), judged on JSON nodes.

What counts as satisfied is what HL7's Java validator counts (org.hl7.fhir.core: ``InstanceValidator.checkInvariant``
calls ``FHIRPathEngine.evaluateToBoolean``, whose ``convertToBoolean`` reads the result): a single boolean is the
answer; an *empty* result is **not satisfied** (an invariant that evaluates to ``{}`` fails, e.g. per-1 when start and
end have different precisions and overlap, so their order is unknown); any other non-empty result is satisfied.  Where
evaluation raises, the Java validator reports the invariant as failed; ``holds`` returns None instead (logged once per
key) so that a gap in fhirpathpy never refuses a write.  Like the Java validator (``FHIRPathExpressionFixer``), some
published R4 expressions are corrected before evaluation (``expression()``); dom-3 is not run as FHIRPath there.

Evaluation: a native Python function when there is one (``invariant_natives.FAST``: the invariants met on nearly every
write, checked against fhirpathpy by the tests; ``NATIVE``: those fhirpathpy cannot evaluate), otherwise fhirpathpy
with the R4 model, each expression compiled once, ``.trace()`` calls removed, ``%resource`` and ``%rootResource`` set
(``%ucum`` and ``%context`` are fhirpathpy's own) and ``hasValue()`` added (fhirpathpy lacks it).  ele-1 (no empty
elements) and txt-1/txt-2 (the narrative's XHTML) are the structure walk's, and hold here.

fhirpathpy semantics to know (2.2.x): ``<``/``>`` on FHIR date/dateTime/instant values compare the *strings* (no time
zones, no precision) unless converted with ``toDateTime()`` (so per-1, inv-1@Task and mdd-1 are rewritten);
``as(T)`` on a collection of more than one item raises (dom-3 uses ``ofType`` instead); Quantities cannot be compared
(rng-2 is native); ``or``/``and`` evaluate both operands, so an error on the side that would not decide still raises;
a primitive with both a value and ``_x`` extensions is two items for ``x`` (``x.count()`` is 2); ``matches`` searches
(not anchored).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

import fhir_server.validation.definitions as definitions
from fhir_server.validation.invariant_natives import FAST, NATIVE

log = logging.getLogger("fhir_server.validation")
_R4 = models["r4"]
Evaluator = Callable[..., bool | None]  # (node, resource, root=None) → True / False / None (could not evaluate)
WALKER = frozenset({"ele-1", "txt-1", "txt-2"})  # enforced natively by the structure walk (structure.py, narrative.py)
_GROUPING = frozenset({"Bundle", "Parameters"})


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str


@cache
def constraint(key: str) -> Constraint:
    raw = definitions.constraint_table()[key]
    return Constraint(key, raw["severity"], raw["human"], raw["expression"])


# Expressions corrected before evaluation.  From HL7's FHIRPathExpressionFixer (R4): ref-1 accepts '#' (a reference
# to the container) and an absent reference; dom-6 does not ask contained resources for a narrative; que-7 names
# FHIR's boolean; que-12 counts right; ras-2 and the name rules (*-0) hold when the element is absent, and regexes
# that must match a whole value are anchored (eld-19, eld-20, *-0).  fhirpathpy workarounds (same meaning): dates are
# compared as dateTimes (``first()``: a value with ``_x`` extensions is two items) and dom-3's ``as`` is ``ofType``.
_NAME = "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')"
_REF1 = "reference.startsWith('#').not() or (reference.substring(1).trace('url') in " + (
    "%rootResource.contained.id.trace('ids'))"
)
_FIXED_EXPRESSIONS = {
    _NAME: "name.exists() implies name.matches('^[A-Z]([A-Za-z0-9_]){0,254}$')",
    _REF1: (
        "reference.exists() implies (reference = '#' or reference.startsWith('#').not()"
        " or (reference.substring(1) in %rootResource.contained.id))"
    ),
    "enableWhen.count() > 2 implies enableBehavior.exists()": "enableWhen.count() >= 2 implies enableBehavior.exists()",
    "probability is decimal implies (probability as decimal) <= 100": (
        "(probability.exists() and (probability is decimal)) implies ((probability as decimal) <= 100)"
    ),
    "start.hasValue().not() or end.hasValue().not() or (start <= end)": (
        "start.hasValue().not() or end.hasValue().not() or (start.first().toDateTime() <= end.first().toDateTime())"
    ),
    "lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn": (
        "lastModified.exists().not() or authoredOn.exists().not()"
        " or (lastModified.first().toDateTime() >= authoredOn.first().toDateTime())"
    ),
    "whenHandedOver.empty() or whenPrepared.empty() or whenHandedOver >= whenPrepared": (
        "whenHandedOver.empty() or whenPrepared.empty()"
        " or (whenHandedOver.first().toDateTime() >= whenPrepared.first().toDateTime())"
    ),
}
_FIXED_KEYS = {
    "dom-6": "(%rootResource != $this) or text.`div`.exists()",
    "que-7": "operator = 'exists' implies (answer is boolean)",
    "con-3": (
        "(verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/condition-ver-status' and"
        " code = 'entered-in-error').exists() and category.coding.exists(system="
        "'http://terminology.hl7.org/CodeSystem/condition-category' and code ='problem-list-item').empty())"
        " implies (clinicalStatus.exists())"
    ),
}
_ANCHORED = ("eld-19", "eld-20")
_OF_TYPE = ("dom-3",)


def expression(key: str) -> str:
    """The expression evaluated for ``key``: the definition's, corrected as above, without ``trace()``."""
    text = constraint(key).expression
    if key in _FIXED_KEYS:
        text = _FIXED_KEYS[key]
    elif key in _ANCHORED:
        text = re.sub(r"\.matches\('(.*)'\)$", r".matches('^\1$')", text)
    elif key in _OF_TYPE:
        text = text.replace(".as(", ".ofType(").replace("(as(", "(ofType(")
    return _untraced(_FIXED_EXPRESSIONS.get(text, text))


def _untraced(text: str) -> str:
    """Drop every ``.trace(...)`` (fhirpathpy prints it); arguments may nest parentheses and quote strings."""
    while (start := text.find(".trace(")) >= 0:
        depth, index, quoted = 0, start + len(".trace"), False
        while True:
            if index == len(text):
                return text  # unbalanced: left for fhirpathpy to refuse
            char = text[index]
            if char == "'" and text[index - 1] != "\\":
                quoted = not quoted
            elif not quoted and char == "(":
                depth += 1
            elif not quoted and char == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        text = text[:start] + text[index + 1 :]
    return text


def _has_value(inputs: list[Any]) -> bool:
    """FHIRPath ``hasValue()``: one primitive with a value (its ``_x`` extension object, if any, is a second item)."""
    values = [item for item in inputs if not isinstance(item, dict | list)]
    return len(values) == 1 and len(inputs) <= 2


_OPTIONS = {"userInvocationTable": {"hasValue": {"fn": _has_value}}}


def _truth(result: list[Any]) -> bool:
    """The Java validator's ``convertToBoolean``: one boolean is itself, empty is false, anything else true."""
    if len(result) == 1 and isinstance(result[0], bool):
        return result[0]
    return len(result) > 0


_logged: set[str] = set()


def _unevaluated(name: str, reason: str) -> None:
    if name not in _logged:
        _logged.add(name)
        log.warning("invariant %s could not be evaluated: %s", name, reason[:300])


@cache
def compiled(expression: str, context_type: str | None = None, name: str | None = None) -> Evaluator:
    """``expression`` compiled once; call it with (node, resource, root=None).  ``context_type`` is the FHIRPath type
    of the node ("Extension", "Observation.component", "Period"): without it, a resource node is typed by its
    ``resourceType`` and any other node is untyped (then ``value`` does not find ``valueString``).  ``name`` (the
    key) names the expression in the log."""
    label = name or expression[:80]
    text = _untraced(_FIXED_EXPRESSIONS.get(expression, expression))
    try:
        function = fhirpathpy.compile(text, model=_R4, options=_OPTIONS)
    except Exception as exc:  # fhirpathpy raises bare Exceptions
        reason = f"{exc}"

        def failed(node: Any, resource: dict[str, Any], root: dict[str, Any] | None = None) -> bool | None:
            _unevaluated(label, reason)
            return None

        return failed

    def evaluate(node: Any, resource: dict[str, Any], root: dict[str, Any] | None = None) -> bool | None:
        typed = ResourceNode.create_node(node, context_type) if context_type else node
        try:
            result = function(typed, {"resource": resource, "rootResource": root if root is not None else resource})
        except Exception as exc:  # a type error in the data, or a function fhirpathpy lacks
            _unevaluated(label, f"{type(exc).__name__}: {exc}")
            return None
        return _truth(result)

    return evaluate


def context_type(key: str) -> str | None:
    """The FHIRPath type of ``key``'s context nodes: the datatype of the element that lists it (Extension, Period),
    else the element's path (a backbone element: "QuestionnaireResponse.item"; a resource: its type)."""
    return _contexts().get(key)


@cache
def _contexts() -> dict[str, str]:
    out: dict[str, str] = {}
    types = definitions._data()["types"]  # the same parsed r4_types.json the walk reads
    for name in sorted(types):
        for element in types[name]["elements"]:
            path, codes = element["path"], [entry["code"] for entry in element.get("type", ())]
            typed = "." in path and len(codes) == 1 and codes[0] not in definitions.BACKBONE
            for key in element.get("constraint", ()):
                out.setdefault(key, codes[0] if typed else path)
    return out


@cache
def _evaluator(key: str) -> Evaluator:
    return compiled(expression(key), context_type(key), key)


def holds(key: str, node: Any, resource: dict[str, Any], root: dict[str, Any] | None = None) -> bool | None:
    """Whether invariant ``key`` holds at ``node`` (the JSON value at the constraint's context) of ``resource``
    (``%resource``, the resource that contains the node) under ``root`` (``%rootResource``: the resource whose
    ``contained`` holds ``resource``, else ``resource``).  HL7's validator makes a Bundle entry's (or a Parameters
    value's) resource its own root: a Bundle or Parameters passed as the root of another resource is read so.
    True satisfied, False violated, None could not be evaluated (logged once per key; never raises)."""
    if root is None or (root is not resource and root.get("resourceType") in _GROUPING):
        root = resource
    fast = FAST.get(key) or NATIVE.get(key)
    if fast is not None:
        try:
            return fast(node, resource, root)
        except Exception:  # data shaped unlike FHIR (the walk reports it): let fhirpathpy judge it
            if key in NATIVE:
                _unevaluated(key, "malformed data")
                return None
    if key in WALKER:
        return True
    if key not in definitions.constraint_table():
        _unevaluated(key, "no such invariant in r4_types.json")
        return None
    return _evaluator(key)(node, resource, root)

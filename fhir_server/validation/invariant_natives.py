"""Native Python for R4 invariants, on the JSON nodes (see ``invariants.py`` for the semantics and the API).

``FAST``: the invariants met on nearly every write — every resource's dom-2…dom-6, every extension's ext-1, the
invariants of QuestionnaireResponse, Observation, AuditEvent, Task and MeasureReport (Flag and Provenance have none
of their own) and of the datatypes they use most (Reference, Quantity, Period, Attachment, Ratio).  fhirpathpy takes
~50 µs an evaluation (dom-3 with contained resources: milliseconds); these take about a microsecond.  Each answers
exactly what its expression (as ``invariants.expression`` gives it) answers under fhirpathpy, to the JSON detail:
``x.exists()`` is true for a primitive that has only ``_x`` extensions, a choice element ``value`` is any
``valueX``/``_valueX`` key of the model's types.  tests/validation/test_invariants.py checks every one against
fhirpathpy on the examples, so none can drift from the specification's expression.

``NATIVE``: invariants fhirpathpy cannot evaluate (rng-2 compares Quantities, ctm-1 needs ``resolve()``) or whose
Java-validator correction needs terminology (opd-3: ``memberOf`` the resource types).  Signature of every function:
(node, %resource, %rootResource) → bool (None: cannot be told without UCUM).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fhirpathpy.models import models

import fhir_server.validation.definitions as definitions

_R4 = models["r4"]
_PATH2TYPE: dict[str, str] = _R4["path2Type"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
Native = Callable[[Any, dict[str, Any], dict[str, Any]], bool | None]


def _present(node: dict[str, Any], key: str) -> bool:
    """FHIRPath ``key.exists()`` on one node: a value, or (a primitive) only its ``_key`` extensions."""
    value = node.get(key)
    if value is not None and value != []:
        return True
    shadow = node.get("_" + key)
    return shadow is not None and shadow != []


def _choice_keys(path: str) -> frozenset[str]:
    """The JSON keys of choice element ``path`` ("Extension.value") in fhirpathpy's model, with their ``_`` twins."""
    stem = path.rsplit(".", 1)[1]
    return frozenset(key for kind in _R4["choiceTypePaths"][path] for key in (stem + kind, f"_{stem}{kind}"))


def _choice_present(node: dict[str, Any], keys: frozenset[str]) -> bool:
    return any(key in keys and value is not None and value != [] for key, value in node.items())


def _items(node: dict[str, Any], key: str) -> list[Any]:
    value = node.get(key)
    return value if isinstance(value, list) else [] if value is None else [value]


_EXTENSION_VALUE = _choice_keys("Extension.value")
_OBSERVATION_VALUE = _choice_keys("Observation.value")


# FHIRPath date/dateTime/instant order (fhirpathpy's FP_DateTime, the spec and HL7's Java engine agree): times are
# moved to UTC, then compared a precision at a time (seconds with their fraction as one); equal up to the shorter
# precision is unknown (None), which makes ``start <= end`` empty and so per-1 unsatisfied.
_DATETIME = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?"
    r"(?:T([0-9]{2})(?::([0-9]{2}))?(?::([0-9]{2}(?:\.[0-9]+)?))?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)


def _instant(value: Any) -> list[Any] | None:
    match = _DATETIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    *fields, second, zone = match.groups()
    parts: list[Any] = []
    for field in fields:  # year, month, day, hour, minute: the precision ends at the first one missing
        if field is None:
            break
        parts.append(int(field))
    if second is not None and len(parts) == 5:
        parts.append(Decimal(second))
    if zone and zone != "Z" and len(parts) > 3:
        sign = 1 if zone[0] == "+" else -1
        moved = datetime(*parts[:3], parts[3], parts[4] if len(parts) > 4 else 0) - sign * timedelta(
            hours=int(zone[1:3]), minutes=int(zone[4:6])
        )
        parts[:5] = [moved.year, moved.month, moved.day, moved.hour, moved.minute][: min(len(parts), 5)]
    return parts


def compare_datetimes(left: Any, right: Any) -> int | None:
    """-1, 0, 1, or None when the order is unknown (different precisions, equal as far as both go) or a value is
    not a date/dateTime."""
    a, b = _instant(left), _instant(right)
    if a is None or b is None:
        return None
    for x, y in zip(a, b, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(a) == len(b) else None


def _first(node: dict[str, Any], key: str) -> Any:  # ``key.first()``: the value, else the ``_key`` object
    value = node.get(key)
    return value if value is not None else node.get("_" + key)


def _has_value(value: Any) -> bool:  # FHIRPath ``hasValue()`` of a primitive's JSON value
    return value is not None and not isinstance(value, dict | list)


# dom-3 reads every descendant, typed: which strings are uri, url, canonical (ofType) and Reference.reference.  The
# types are fhirpathpy's own (its R4 model, the way its descendants() names child nodes), so the answer is the
# expression's; fhirpathpy itself takes milliseconds, and HL7's Java validator does not run it as FHIRPath either.
def _is_a(kind: str, base: str) -> bool:
    while kind:
        if kind == base:
            return True
        kind = _R4["type2Parent"].get(kind) or _PATH2TYPE.get(kind)
    return False


_URI_FAMILY = frozenset(kind for kind in {*_R4["type2Parent"], *_PATH2TYPE.values()} if _is_a(kind, "uri"))


def _strings(node: dict[str, Any], path: str, deep: bool = False) -> Iterator[tuple[bool, str, str, str]]:
    """(the parent is below the start, key, FHIRPath type, value) for every string below ``node``."""
    for key, value in node.items():
        child = "Extension" if key == "extension" else f"{path}.{key}"
        child = _ELSEWHERE.get(child, child)
        child = _PATH2TYPE.get(child, child)
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, dict):
                yield from _strings(item, item.get("resourceType", child), True)  # a resource restarts the path
            elif isinstance(item, str):
                yield deep, key, child, item


def _dom3(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    contained = _items(node, "contained")
    if not contained:
        return True
    targets = {
        value
        for deep, key, kind, value in _strings(resource, resource["resourceType"])
        if (deep and key == "reference") or kind in _URI_FAMILY
    }
    for inner in contained:
        inner_id = inner.get("id")
        if not isinstance(inner_id, str) or "#" + inner_id in targets:
            continue  # without an id, '#' + id is empty and where() keeps nothing
        if not any(
            value == "#" and ((deep and key == "reference") or kind == "canonical")
            for deep, key, kind, value in _strings(inner, inner["resourceType"])
        ):
            return False  # neither referenced from the resource nor referring to its container
    return True


def _ref1(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    reference = node.get("reference")
    if not _present(node, "reference"):
        return True
    if not isinstance(reference, str):
        raise TypeError("reference without a string value")  # fhirpathpy judges that shape itself
    if reference == "#" or not reference.startswith("#"):
        return True
    return reference[1:] in {inner.get("id") for inner in _items(root, "contained")}


def _obs7(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    if not _choice_present(node, _OBSERVATION_VALUE):
        return True
    codings = _items(resource.get("code") or {}, "coding")
    return not any(
        coding in codings
        for component in _items(node, "component")
        for coding in _items(component.get("code") or {}, "coding")
    )


def _mrp1(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    kind = _first(node, "type")
    if kind is None:  # {} != 'data-collection' is empty: the 'or' is then true only when its other side is
        return not _present(node, "group")
    return kind != "data-collection" or not _present(node, "group")


def _per1(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    start, end = node.get("start"), node.get("end")
    if not _has_value(start) or not _has_value(end):
        return True
    order = compare_datetimes(start, end)
    return order is not None and order <= 0


def _task_inv1(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    if not _present(node, "lastModified") or not _present(node, "authoredOn"):
        return True
    order = compare_datetimes(_first(node, "lastModified"), _first(node, "authoredOn"))
    return order is not None and order >= 0


FAST: dict[str, Native] = {
    # Every extension: a value or nested extensions, never both.
    "ext-1": lambda n, r, root: _present(n, "extension") != _choice_present(n, _EXTENSION_VALUE),
    # Every DomainResource: contained resources have no contained, no versionId/lastUpdated, no security labels,
    # and are referenced (dom-3); a narrative is recommended (warning; not asked of contained resources: dom-6
    # as corrected by HL7's validator).
    "dom-2": lambda n, r, root: not any(_present(inner, "contained") for inner in _items(n, "contained")),
    "dom-3": _dom3,
    "dom-4": lambda n, r, root: (
        not any(
            _present(meta, "versionId") or _present(meta, "lastUpdated")
            for inner in _items(n, "contained")
            for meta in _items(inner, "meta")
        )
    ),
    "dom-5": lambda n, r, root: (
        not any(_present(meta, "security") for inner in _items(n, "contained") for meta in _items(inner, "meta"))
    ),
    "dom-6": lambda n, r, root: (root is not n and root != n) or any(_present(t, "div") for t in _items(n, "text")),
    # QuestionnaireResponse.item: answers and child items are not both on an item.
    "qrs-1": lambda n, r, root: not (_present(n, "answer") and _present(n, "item")),
    # Observation: a value or a dataAbsentReason, not both; no component repeats the code when there is a value;
    # a reference range has low, high or text.
    "obs-6": lambda n, r, root: not _present(n, "dataAbsentReason") or not _choice_present(n, _OBSERVATION_VALUE),
    "obs-7": _obs7,
    "obs-3": lambda n, r, root: _present(n, "low") or _present(n, "high") or _present(n, "text"),
    # AuditEvent.entity: a name or a query, not both.
    "sev-1": lambda n, r, root: not _present(n, "name") or not _present(n, "query"),
    # Task: lastModified is not before authoredOn.
    "inv-1@Task": _task_inv1,
    # MeasureReport: no groups on a data-collection report; each stratum has a value or components (xor).
    "mrp-1": _mrp1,
    "mrp-2": lambda n, r, root: all(
        _present(stratum, "value") != _present(stratum, "component")
        for group in _items(n, "group")
        for stratifier in _items(group, "stratifier")
        for stratum in _items(stratifier, "stratum")
    ),
    # Datatypes: a local reference names a contained resource; a Quantity's code has a system (a SimpleQuantity has
    # no comparator); a Period does not end before it starts; inline data has a contentType; a Ratio has both parts
    # or neither (then an extension).
    "ref-1": _ref1,
    "qty-3": lambda n, r, root: not _present(n, "code") or _present(n, "system"),
    "sqty-1": lambda n, r, root: not _present(n, "comparator"),
    "per-1": _per1,
    "att-1": lambda n, r, root: not _present(n, "data") or _present(n, "contentType"),
    "rat-1": lambda n, r, root: (
        (not _present(n, "numerator")) != _present(n, "denominator")
        and (_present(n, "numerator") or _present(n, "extension"))
    ),
}


def _rng2(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool | None:
    """``low <= high`` on Quantities: comparable as numbers when both have the same unit (system and code, else the
    same unit text); other units need UCUM (None).  A side without a value makes the comparison empty (False)."""
    if not _present(node, "low") or not _present(node, "high"):
        return True
    low, high = node["low"], node["high"]
    if not isinstance(low.get("value"), int | float) or not isinstance(high.get("value"), int | float):
        return False
    unit = ("system", "code") if "code" in low or "code" in high else ("unit",)
    if any(low.get(field) != high.get(field) for field in unit):
        return None
    return low["value"] <= high["value"]


def _ctm1(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    """``onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))``:
    resolve() finds a contained resource, and for a literal reference the type it names (what resolving it would
    find); a member that resolves to nothing (a logical reference, an absolute URL) satisfies it."""
    if not _present(node, "onBehalfOf"):
        return True
    reference = (node.get("member") or {}).get("reference")
    if not isinstance(reference, str):
        return True
    if reference.startswith("#"):
        found = [inner for inner in _items(root, "contained") if inner.get("id") == reference[1:]]
        return not found or found[0].get("resourceType") == "Practitioner"
    parts = reference.split("/")
    if "://" in reference or len(parts) not in (2, 4) or not definitions.is_resource(parts[0]):
        return True
    return parts[0] == "Practitioner"


def _opd3(node: dict[str, Any], resource: dict[str, Any], root: dict[str, Any]) -> bool:
    """HL7's validator corrects R4's opd-3 to allow a resource type too: ``targetProfile.exists() implies (type =
    'Reference' or type = 'canonical' or type.memberOf('http://hl7.org/fhir/ValueSet/resource-types'))``."""
    if not _present(node, "targetProfile"):
        return True
    kind = node.get("type")
    info = definitions.type_info(kind) if isinstance(kind, str) else None
    return kind in ("Reference", "canonical") or (info is not None and info["kind"] == "resource")


NATIVE: dict[str, Native] = {"rng-2": _rng2, "ctm-1": _ctm1, "opd-3": _opd3}

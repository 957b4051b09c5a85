"""A corpus of generated resources for comparing the indexer's fast path with fhirpathpy.

Built from fhirpathpy's own R4 model (``path2Type``, ``choiceTypePaths``, ``pathsDefinedElsewhere``), not from the
fhir.resources models the fast path reads its choice keys from, so a difference between the two models shows up as
a disagreement.  Each resource type gets several resources: every element down to a bounded depth, with arrays of
two (where the model says the element repeats), each choice element ([x]) in a different one of its types in each
resource, references to different resource types (relative, absolute with ``_history``, contained, urn:uuid),
booleans true in one resource and false in the next, and extensions on the resource and inside datatypes.
"""

from __future__ import annotations

import itertools
import typing
from collections import defaultdict
from functools import cache
from typing import Any

from fhirpathpy.models import models as fhirpath_models

from fhir_server import fhirjson, models

MODEL = fhirpath_models["r4"]
PATH_TYPES: dict[str, str] = MODEL["path2Type"]
ELSEWHERE: dict[str, str] = MODEL["pathsDefinedElsewhere"]
CHOICES: dict[str, list[str]] = MODEL["choiceTypePaths"]

MAX_DATATYPE_DEPTH = 2  # datatypes inside datatypes (Identifier.assigner.identifier...) stop here
MAX_BACKBONE_DEPTH = 5  # nested backbone elements (Questionnaire.item.item...) stop here
SKIPPED = {"id", "modifierExtension", "contained"}
REFERENCE_TARGETS = (
    "Patient",
    "Practitioner",
    "Organization",
    "RelatedPerson",
    "Location",
    "Group",
    "Device",
    "Encounter",
)
VARIANTS = len(REFERENCE_TARGETS)  # each element refers to each of these types in one of a type's resources
# Codes that expressions test for (``telecom.where(system='email')``, ``relatedArtifact.where(type=...)``)
CODES = {
    "ContactPoint.system": ("phone", "email", "fax", "url"),
    "RelatedArtifact.type": ("composed-of", "depends-on", "derived-from", "predecessor", "successor"),
}
EXTENSION_VALUES = ("valueString", "valueCodeableConcept", "valueReference", "valueBoolean", "valueQuantity")


@cache
def _children() -> dict[str, list[tuple[str, str | None]]]:
    """Element path -> [(JSON key, type or None for a backbone element)], from the model's flat path list."""
    out: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    seen: set[str] = set()
    for path, type_name in PATH_TYPES.items():
        parent, _, key = path.rpartition(".")
        out[parent].append((key, type_name))
        # a backbone element has no entry of its own: it appears as the parent of its children
        for depth in range(1, path.count(".")):
            ancestor = ".".join(path.split(".")[: depth + 1])
            if ancestor not in PATH_TYPES and ancestor not in seen:
                seen.add(ancestor)
                grand, _, name = ancestor.rpartition(".")
                out[grand].append((name, None))
    for path, target in ELSEWHERE.items():
        parent, _, key = path.rpartition(".")
        out[parent].append((key, f"@{target}"))
    return out


@cache
def _choice_forms() -> dict[tuple[str, str], tuple[int, int]]:
    """(element path, typed JSON key) -> (which of the choice element's types it is, how many it has)."""
    out = {}
    for base_path, types in CHOICES.items():
        parent, _, base = base_path.rpartition(".")
        for index, type_name in enumerate(types):
            out[(parent, base + type_name)] = (index, len(types))
    return out


@cache
def _repeats(type_path: str, key: str) -> bool:
    """Whether the element repeats, from the R4B model where it has one (it is the same for every R4 element it
    models); otherwise a single value."""
    names = type_path.split(".")
    try:
        model: Any = models.model_class(names[0])
        for name in names[1:]:
            model = models.element_model(models.fields_by_key(model)[name].annotation)
        field = models.fields_by_key(model)[key]
    except (ValueError, KeyError, AttributeError, TypeError):
        return False
    return any(typing.get_origin(arg) is list for arg in (field.annotation, *typing.get_args(field.annotation)))


class Builder:
    def __init__(self, variant: int) -> None:
        self.variant = variant
        self.counter = itertools.count()
        self.second = False  # making the second item of an array

    def resource(self, resource_type: str) -> dict[str, Any]:
        body = self.element(resource_type, resource_type, 0, 0)
        body = {"resourceType": resource_type, "id": f"r{self.variant}", **body}
        body["extension"] = [self.extension(key) for key in EXTENSION_VALUES[self.variant % 2 :: 2]]
        return body

    def element(self, path: str, type_path: str, datatype_depth: int, backbone_depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, type_name in _children().get(path, ()):
            if key in SKIPPED or (key == "extension" and datatype_depth == 0):
                continue
            form = _choice_forms().get((path, key))
            if form and self.variant % form[1] != form[0]:
                continue  # one typed form of each choice element per resource, a different one in each
            value = self.value(f"{path}.{key}", key, type_name, datatype_depth, backbone_depth)
            if value is None:
                continue
            if _repeats(type_path, key) and datatype_depth + backbone_depth <= 1:  # deeper: one, or it multiplies
                self.second = True
                second = self.value(f"{path}.{key}", key, type_name, datatype_depth, backbone_depth)
                self.second = False
                out[key] = [value, second] if second is not None else [value]
            else:
                out[key] = value
        return out

    def value(self, path: str, key: str, type_name: str | None, datatype_depth: int, backbone_depth: int) -> Any:
        n = next(self.counter)
        if type_name is None or type_name.startswith("@"):  # a backbone element, or one defined elsewhere
            if backbone_depth >= (MAX_BACKBONE_DEPTH if type_name is None else 4):  # recursion (item.item) once
                return None
            source = path if type_name is None else type_name[1:]
            return self.element(source, source, datatype_depth, backbone_depth + 1) or None
        if type_name == "Resource":
            kind = ("Composition", "MessageHeader", "Patient")[(self.variant + n) % 3]
            return {"resourceType": kind, "id": f"inner{n}"}
        if type_name == "Extension":  # in some datatypes only: extensions everywhere would multiply the size
            return self.extension(EXTENSION_VALUES[n % len(EXTENSION_VALUES)]) if n % 7 == 0 else None
        if type_name[0].isupper() and not type_name.startswith("System."):
            if datatype_depth >= MAX_DATATYPE_DEPTH:
                return None
            if type_name == "Reference":
                return self.reference(n)
            return self.element(type_name, type_name, datatype_depth + 1, backbone_depth) or None
        return self.primitive(type_name, path, key, n)

    def reference(self, n: int) -> dict[str, Any]:
        """A typed reference to the resource's own target type first (every element refers to every type in one
        of the resources); second items of arrays vary the rest: other types, untyped (contained, urn:uuid)."""
        if self.second:
            target, form = REFERENCE_TARGETS[n % len(REFERENCE_TARGETS)], n % 5
        else:
            target, form = REFERENCE_TARGETS[self.variant % len(REFERENCE_TARGETS)], n % 2
        reference = (
            f"{target}/t{n}",
            f"http://example.org/fhir/{target}/t{n}/_history/2",
            f"{target}/t{n}",
            "#contained",
            f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
        )[form]
        out: dict[str, Any] = {"reference": reference, "display": f"Ref {n}"}
        if n % 3 == 0:
            out["identifier"] = {"system": "urn:ids", "value": f"id{n}"}
        return out

    def extension(self, key: str) -> dict[str, Any]:
        values = {
            "valueString": "extension text",
            "valueCodeableConcept": {"coding": [{"system": "urn:ext", "code": "e"}]},
            "valueReference": {"reference": "Patient/ext"},
            "valueBoolean": self.variant % 2 == 0,
            "valueQuantity": {"value": 2.5, "unit": "mg"},
        }
        return {"url": f"http://example.org/extension/{key}", key: values[key]}

    def primitive(self, type_name: str, element: str, key: str, n: int) -> Any:
        v = self.variant
        if element in CODES:
            return CODES[element][(v + n) % len(CODES[element])]
        samples = {
            "boolean": (v + n) % 2 == 0,
            "integer": n + 1,
            "positiveInt": n + 1,
            "unsignedInt": n,
            "decimal": 1.5 + n,
            "date": f"20{10 + v:02d}-0{1 + n % 9}-1{n % 10}",
            "dateTime": ("2015-02-07T13:28:17+02:00", "2016-03", "2017", "2018-04-05")[(v + n) % 4],
            "instant": "2015-02-07T13:28:17.239+02:00",
            "time": "10:20:30",
            "uri": f"http://example.org/{key}/{n}",
            "url": f"http://example.org/url/{key}/{n}",
            "canonical": f"http://example.org/canonical/{key}|1.{v}",
            "oid": f"urn:oid:1.2.3.{n}",
            "uuid": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "id": f"id-{n}",
            "code": f"code-{v}-{n % 3}",
            "markdown": f"**{key}** {n}",
            "base64Binary": "AAEC",
        }
        return samples.get(type_name, f"{key.title()} Müller {v}-{n}")  # string and System.String


def corpus(resource_type: str, count: int = VARIANTS) -> list[dict[str, Any]]:
    """``count`` generated resources of the type, read back as the indexer sees a request body (fhirjson)."""
    return [fhirjson.parse(fhirjson.dumps(Builder(variant).resource(resource_type))) for variant in range(count)]


def variants(resource_type: str) -> int:
    """How many resources it takes for every typed form of the type's own choice elements, and every reference
    target, to appear once."""
    choices = (len(types) for path, types in CHOICES.items() if path.startswith(f"{resource_type}."))
    return max([VARIANTS, *choices])

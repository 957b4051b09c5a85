"""The indexer's fast path (search/paths.py) gives the index rows fhirpathpy's values would give, for every search
parameter of every served type, over a generated corpus (tests/search/fhirpath_corpus.py) and the known cases.

The oracle is fhirpathpy evaluating each parameter's R4 expression on the whole resource, its values turned into
rows by the same parameter-type modules the indexer uses (composites element by element, as the indexer does).
Four rewrites stand in for what fhirpathpy cannot evaluate, the same meaning written another way:

- ``Resource.x`` / ``DomainResource.x`` (the common parameters) as ``<the resource's type>.x``: fhirpathpy matches
  a type name only against the exact ``resourceType``, so it finds no ``meta.tag`` of a Patient under ``Resource``;
- ``resolve() is T`` as a test of the reference's type segment (``T/id``, ``.../T/id/_history/v``): fhirpathpy does
  not implement ``resolve()``, and the server types a reference by that segment without reading the target.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from functools import cache
from typing import Any

import fhirpathpy

from fhir_server import models
from fhir_server.fhirjson import FhirDecimal
from fhir_server.search.indexer import SearchIndexer, _identifier_types
from fhir_server.search.paths import R4_MODEL, split_union
from fhir_server.search.registry import Registry, SearchParam, default_registry
from fhir_server.search.types import MODULES, token
from tests.search.fhirpath_corpus import corpus, variants
from tests.search.helpers import create, found

REGISTRY: Registry = default_registry()
INDEXER = SearchIndexer(REGISTRY)
TYPES = sorted(t for t in models.R4_RESOURCE_TYPES if REGISTRY.indexed_for(t))

KNOWN_CASES = [
    # deceased=false must find a Patient whose deceasedBoolean is false (and one with no deceased[x])
    {"resourceType": "Patient", "id": "alive", "deceasedBoolean": False},
    {"resourceType": "Patient", "id": "no-deceased"},
    {"resourceType": "Patient", "id": "dead", "deceasedDateTime": "2020-01-02"},
    # a canonical is a uri: (ConceptMap.source as uri) holds a sourceCanonical too
    {"resourceType": "ConceptMap", "id": "c", "status": "draft", "sourceCanonical": "http://example.org/vs|1"},
    {
        "resourceType": "ConceptMap",
        "id": "u",
        "status": "draft",
        "sourceUri": "http://example.org/vs",
        "targetUri": "u",
    },
    # a composite whose component is a bare choice element, and one whose components read %resource
    {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "characteristic": [{"code": {"text": "c"}, "valueCodeableConcept": {"text": "v"}, "exclude": False}],
    },
    {
        "resourceType": "MolecularSequence",
        "id": "m",
        "coordinateSystem": 0,
        "referenceSeq": {"chromosome": {"coding": [{"code": "1"}]}, "referenceSeqId": {"text": "NC"}},
        "variant": [{"start": 1, "end": 3}, {"start": 7}],
    },
]


def _oracle_text(expression: str, resource_type: str) -> str:
    expression = re.sub(r"(?<![\w.%])(?:Resource|DomainResource)\.", f"{resource_type}.", expression)
    expression = re.sub(
        r"resolve\(\) is ([A-Za-z]+)", r"reference.matches('^(.*/)?\1/[^/]+(/_history/[^/]+)?$')", expression
    )
    expression = re.sub(r"([\w.\]\[%]+) as ([A-Za-z]+)", r"\1.select($this as \2)", expression)
    expression = re.sub(r"\.as\(([A-Za-z]+)\)", r".select($this as \1)", expression)
    return re.sub(
        r" as (DateTime|Date|Time|String|Boolean|Integer|Decimal)\)", lambda m: f" as {_lower(m[1])})", expression
    )


def _lower(name: str) -> str:
    return name[0].lower() + name[1:]


@cache
def _compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression, model=R4_MODEL)


def _as_parsed(value: Any) -> Any:
    """fhirpathpy hands decimals back as Decimal; a request body's are FhirDecimal (fhirjson), as the indexer sees
    them on the fast path."""
    if isinstance(value, Decimal):
        return FhirDecimal(str(value))
    if isinstance(value, dict):
        return {k: _as_parsed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_parsed(v) for v in value]
    return value


def _oracle(expression: str, resource_type: str, resource: dict[str, Any]) -> list[Any]:
    text = _oracle_text(expression, resource_type)
    return [_as_parsed(v) for v in _compiled(text)(resource, {"resource": resource}) if v is not None]


def _key(row: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in row.items() if k != "param"))


def _oracle_rows(param: SearchParam, resource_type: str, resource: dict[str, Any]) -> dict[tuple[str, str], set]:
    """The rows the indexer would write if fhirpathpy evaluated every expression."""
    out: dict[tuple[str, str], set] = {}

    def add(table: str, name: str, rows: list[dict[str, Any]], element: int | None = None) -> None:
        for row in rows:
            out.setdefault((table, name), set()).add(_key({**row, "element": element}))

    if param.type != "composite":
        values = _oracle(param.expression, resource_type, resource)
        add(MODULES[param.type].TABLE, param.code, MODULES[param.type].index(values))
        if param.type == "reference":
            identifiers = [v["identifier"] for v in values if isinstance(v, dict) and "identifier" in v]
            add("token", f"{param.code}:identifier", token.index(identifiers))
        elif param.type == "token":
            add("token", f"{param.code}:of-type", _identifier_types(values))
        return out
    components = REGISTRY.components(param)
    nodes = _oracle(param.expression, resource_type, resource)
    bare_type = param.expression.strip("() ") == resource_type
    for element, node in enumerate(nodes):
        if not isinstance(node, dict) or not components:
            continue
        parts = []
        for component, expression in components:
            values: list[Any] = []
            for alternative in split_union(expression):
                if alternative.startswith("%resource."):
                    values += _oracle(alternative, resource_type, resource)
                elif bare_type:
                    values += _oracle(f"{resource_type}.{alternative}", resource_type, resource)
                else:
                    values += _oracle(f"({param.expression})[{element}].{alternative}", resource_type, resource)
            parts.append((component, MODULES[component.type].index(values)))
        if all(rows for _, rows in parts):
            for number, (component, rows) in enumerate(parts):
                add(MODULES[component.type].TABLE, f"{param.code}#{number}", rows, element)
    return out


def _indexed_rows(resource_type: str, resource: dict[str, Any]) -> dict[tuple[str, str], set]:
    out: dict[tuple[str, str], set] = {}
    for table, rows in INDEXER.index_rows(resource_type, resource).items():
        for row in rows:
            if table not in ("series", "report", "combo"):  # indexes made from the search rows, not parameters
                out.setdefault((table, row["param"]), set()).add(_key(row))
    return out


def _owner(name: str) -> str:
    return name.split("#")[0].split(":")[0]


def _compare(resources: list[dict[str, Any]]) -> tuple[list[str], Counter]:
    disagreements: list[str] = []
    covered: Counter = Counter()
    for resource in resources:
        resource_type = resource["resourceType"]
        expected: dict[tuple[str, str], set] = {}
        for param in REGISTRY.indexed_for(resource_type):
            expected.update(_oracle_rows(param, resource_type, resource))
        actual = _indexed_rows(resource_type, resource)
        for key in sorted(set(expected) | set(actual)):
            want, got = expected.get(key, set()), actual.get(key, set())
            if want:
                covered[(resource_type, _owner(key[1]))] += 1
            if want != got:
                param = REGISTRY.get(resource_type, _owner(key[1]))
                disagreements.append(
                    f"{resource_type}/{resource.get('id')} {key[1]} ({param.expression if param else '?'}): "
                    f"fhirpathpy {sorted(want - got)[:2]} fast path {sorted(got - want)[:2]}"
                )
    return disagreements, covered


def test_the_known_cases_agree():
    disagreements, _ = _compare(KNOWN_CASES)
    assert not disagreements, "\n".join(disagreements)


@cache
def _corpus_results() -> tuple[tuple[str, ...], Counter]:
    resources = [r for t in TYPES for r in corpus(t, variants(t))]
    disagreements, covered = _compare(resources)
    return tuple(disagreements), covered


def test_every_search_parameter_agrees_over_the_corpus():
    disagreements, _ = _corpus_results()
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements[:60])


def test_the_corpus_reaches_the_parameters():
    _, covered = _corpus_results()
    expected = {(t, p.code) for t in TYPES for p in REGISTRY.indexed_for(t)}
    reached = expected & set(covered)
    print(f"{len(reached)} of {len(expected)} (type, parameter) pairs hold values in the corpus")
    # Indexed by neither evaluator, whatever the resource holds: Bundle's composition and message are references
    # that R4 reads from the first entry's resource (a resource, not a Reference), and R4 swapped the definitions
    # of DocumentReference relationship's two components (its code is read as a reference, its target as a token).
    never = {("Bundle", "composition"), ("Bundle", "message"), ("DocumentReference", "relationship")}
    assert expected - reached == never


# -- the fixed disagreements, through the API ------------------------------------------------------------------------


def test_deceased_false_finds_the_living(client, uid):
    identifier = {"identifier": [{"system": "urn:test", "value": uid}]}
    alive = create(client, {"resourceType": "Patient", **identifier, "deceasedBoolean": False})
    unknown = create(client, {"resourceType": "Patient", **identifier})
    dead = create(client, {"resourceType": "Patient", **identifier, "deceasedDateTime": "2020-01-02"})
    by_uid = {"identifier": f"urn:test|{uid}"}
    assert found(client, "/Patient", {**by_uid, "deceased": "false"}) == {alive, unknown}
    assert found(client, "/Patient", {**by_uid, "deceased": "true"}) == {dead}


def test_source_uri_finds_a_canonical_source(client, uid):
    source = f"http://example.org/ValueSet/{uid}"
    made = create(client, {"resourceType": "ConceptMap", "status": "draft", "sourceCanonical": source})
    assert found(client, "/ConceptMap", {"source-uri": source}) == {made}


def test_group_characteristic_value_and_molecular_sequence_variant_composites(client, uid):
    group = create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "characteristic": [
                {
                    "code": {"coding": [{"code": uid}]},
                    "valueCodeableConcept": {"coding": [{"code": "yes"}]},
                    "exclude": False,
                }
            ],
        },
    )
    assert found(client, "/Group", {"characteristic-value": f"{uid}$yes"}) == {group}
    sequence = create(
        client,
        {
            "resourceType": "MolecularSequence",
            "coordinateSystem": 0,
            # msq-5 / msq-6: a chromosome comes with its genome build, and one reference sequence is named
            "referenceSeq": {"chromosome": {"coding": [{"system": "urn:chr", "code": uid}]}, "genomeBuild": "GRCh38"},
            "variant": [{"start": 100, "end": 200}],
        },
    )
    params = {"chromosome-variant-coordinate": f"urn:chr|{uid}$gt50$lt300"}
    assert found(client, "/MolecularSequence", params) == {sequence}


def test_the_extension_fast_path_and_own_alternatives_agree_with_fhirpathpy():
    """The project's own parameters on an extension (terminology/searchparameter-session-*.json), evaluated per
    base type on its own alternatives by the fast path, select what fhirpathpy selects with that alternative, and
    the other types' alternatives select nothing there.  The oracle spells ``extension('u')`` as
    ``extension.where(url = 'u')`` (FHIRPath's definition of it): fhirpathpy's ``extension('u')`` returns only the
    first matching extension."""
    import json
    from pathlib import Path

    from fhir_server.search.custom import own_alternatives
    from fhir_server.search.paths import compile_expression

    url = "http://fit-fhir.org/fhir/StructureDefinition/session-program"
    stamped = [
        {"url": "http://example.org/other", "valueString": "x"},
        {"url": url, "valueReference": {"reference": "Organization/p"}},
        {"url": url, "valueReference": {"reference": "Organization/q"}},
    ]
    for name in ("searchparameter-session-program.json", "searchparameter-session-clinician.json"):
        definition = json.loads((Path(__file__).parents[2] / "terminology" / name).read_text())
        for base in definition["base"]:
            for extension in ([], stamped, [{"url": url}]):
                resource = {"resourceType": base, "extension": extension} if extension else {"resourceType": base}
                own = own_alternatives(definition["expression"], base)
                assert own is not None and own.startswith(f"{base}.") and "|" not in own
                spelled = own.replace(".extension('", ".extension.where(url = '")
                expected = fhirpathpy.evaluate(resource, spelled, model=R4_MODEL)
                assert compile_expression(own)(resource) == expected, (name, base, extension)
                others = [p for p in definition["expression"].split(" | ") if not p.startswith(f"{base}.")]
                assert all(fhirpathpy.evaluate(resource, p, model=R4_MODEL) == [] for p in others)

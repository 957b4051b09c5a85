"""The strict walk's parts, without a server: element tables cover every R4B primitive, reference and narrative
syntax row by row, the parser resolves no entity, and nothing the library ships is refused (no false refusals)."""

from __future__ import annotations

import contextlib
import json
import time
import typing

import pytest
from lxml import etree

from fhir_server import fhirjson, models
from fhir_server.errors import FhirError
from fhir_server.validation import validate_resource
from fhir_server.validation.elements import _KIND_OF_MARKER, elements
from fhir_server.validation.formats import canonical_problem, reference_problem
from fhir_server.validation.narrative import _parser, narrative_problems
from tests.library.examples import QUESTIONNAIRES, TERMINOLOGY, all_examples

NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def _markers(annotation: typing.Any) -> set[str]:
    found = {type(m).__name__ for m in getattr(annotation, "__metadata__", ())}
    for arg in typing.get_args(annotation):
        found |= _markers(arg)
    return found


def test_every_primitive_marker_of_the_r4b_models_has_a_json_kind():
    seen: set[type] = set()
    unknown: set[str] = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for field in models.fields_by_key(model).values():
            child = models.element_model(field.annotation)
            if child is not None:
                walk(child)
            else:
                unknown.update(_markers(field.annotation) - set(_KIND_OF_MARKER) - {"EncodedBytes"})

    for resource_type in models.R4_RESOURCE_TYPES:
        walk(models.model_class(resource_type))
    assert not unknown, f"primitive types without a JSON check: {unknown}"


def test_element_kinds():
    answer = elements(models.model_class("QuestionnaireResponseItemAnswer"), "QuestionnaireResponse.item.answer")
    assert answer["valueInteger"].kind == "integer"
    assert answer["valueBoolean"].kind == "boolean"
    assert answer["valueDecimal"].kind == "decimal"
    assert answer["valueString"].kind == "string"
    assert answer["valueReference"].kind == "complex"
    reference = elements(models.model_class("Reference"), "Reference")
    assert reference["reference"].kind == "reference"
    patient = elements(models.model_class("Patient"), "Patient")
    assert patient["gender"].codes is not None and "female" in patient["gender"].codes
    assert patient["contained"].kind == "resource"


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/1",
        "Patient/a-b.C",
        "Patient/1/_history/2",
        "MedicinalProduct/1",  # R4, though R4B models do not serve it
        "https://ehr.example.org/fhir/Patient/1",
        "http://localhost:8080/Patient/1",
        "#",
        "#p1",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        "urn:oid:1.2.840.10008",
    ],
)
def test_valid_references(reference):
    assert reference_problem(reference) is None


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/",
        "/Patient/1",
        "Patient",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "urn:uuid:not-a-uuid",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950",
        "urn:oid:3.1",
        "urn:isbn:123",
        "Frobnicator/1",
        "Patient/" + "a" * 65,
        "Patient/a_b",
        "Patient/1/_history/",
        "Patient/1/extra",
        "ftp://example.org/Patient/1",
        "file:///etc/passwd",
        "//evil.example/Patient/1",
        "http://",
        "https://[::1",
        "Patient?identifier=x",
        "#a b",
        "Patient/1\n",
    ],
)
def test_invalid_references(reference):
    assert reference_problem(reference) is not None


@pytest.mark.parametrize(("value", "ok"), [("http://x/Q", True), ("http://x/Q|1.0", True), ("#q", True),
                                           ("http://x/Q|", False), ("|1", False), ("a|b|c", False),
                                           ("http://x/ Q", False)])  # fmt: skip
def test_canonicals(value, ok):
    assert (canonical_problem(value) is None) is ok


GOOD_DIVS = [
    f"<div {NS}>x</div>",
    f'<div {NS} xml:lang="en" lang="en"><p class="a" style="color:red">&amp;&#160;&lt;</p></div>',
    f'<div {NS}><a href="https://e.org/x?a=1#f" name="n">l</a><a href="#p1">c</a><a href="mailto:a@b.c">m</a></div>',
    f'<div {NS}><img src="data:image/png;base64,iVBORw0KGgo=" alt=""/></div>',  # an image alone is content
    f'<div {NS}><table border="1"><tbody><tr><td colspan="2">1</td></tr></tbody></table></div>',
    f"<div {NS}><!-- c -->text after a comment</div>",
]
BAD_DIVS = [
    f"<div {NS}><script>alert(1)</script>x</div>",
    f'<div {NS}><p onmouseover="x()">x</p></div>',
    f'<div {NS}><a href="vbscript:x">x</a></div>',
    f'<div {NS}><a href="&#106;avascript:alert(1)">x</a></div>',
    f'<div {NS}><img src="data:image/svg+xml;base64,PHN2Zz4=" alt=""/></div>',
    f"<div {NS}><object>x</object></div>",
    f"<div {NS}><embed/>x</div>",
    f"<div {NS}><applet>x</applet></div>",
    f"<div {NS}><base href='https://e.org/'/>x</div>",
    f"<div {NS}><link rel='stylesheet' href='https://e.org/a.css'/>x</div>",
    f"<div {NS}><meta http-equiv='refresh' content='0'/>x</div>",
    f"<div {NS}><body>x</body></div>",
    f"<div {NS}><ins>x</ins></div>",
    f'<div {NS}><span style="width: expression(alert(1))">x</span></div>',
    f"<div {NS}></div>",
    f"<div {NS}>x</div><div {NS}>y</div>",
    f"<div {NS}>x</div> trailing",
    f"<DIV {NS}>x</DIV>",
]


@pytest.mark.parametrize("div", GOOD_DIVS)
def test_good_narratives(div):
    assert narrative_problems(div) == []


@pytest.mark.parametrize("div", BAD_DIVS)
def test_bad_narratives(div):
    assert narrative_problems(div)


def test_no_entity_is_resolved_and_a_bomb_costs_nothing():
    xxe = f'<!DOCTYPE div [<!ENTITY x SYSTEM "file:///etc/passwd">]><div {NS}>&x;</div>'
    assert narrative_problems(xxe)
    # Without the DOCTYPE guard, lxml must still not expand: an undeclared entity is a syntax error.
    assert narrative_problems(f"<div {NS}>&x;</div>")
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<!DOCTYPE d [<!ENTITY l0 "lol">{lol}]><div {NS}>&l9;</div>'
    started = time.perf_counter()
    assert narrative_problems(bomb)
    assert narrative_problems(bomb.replace("<!DOCTYPE", " <!DOCTYPE"))
    # The parser itself, below the DOCTYPE guard: it keeps entity references unexpanded and reads no file.
    root = etree.fromstring(xxe.encode(), _parser())
    assert "root:" not in etree.tostring(root, encoding="unicode")
    with contextlib.suppress(etree.XMLSyntaxError):  # libxml2 refuses the amplification or leaves it unexpanded
        assert len(etree.tostring(etree.fromstring(bomb.encode(), _parser()))) < 1000
    assert time.perf_counter() - started < 0.5


def _shipped() -> list[tuple[str, dict]]:
    paths = sorted(QUESTIONNAIRES.glob("*/questionnaire.json")) + sorted(TERMINOLOGY.glob("**/*.json"))
    return [(str(p.relative_to(QUESTIONNAIRES.parent)), json.loads(p.read_text())) for p in paths]


@pytest.mark.parametrize(("name", "resource"), _shipped(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_library_passes_strict_validation(name, resource):
    validate_resource(fhirjson.parse(json.dumps(resource).encode()))


@pytest.mark.parametrize("example", [e for e in all_examples() if e.path.stem.startswith("valid")], ids=str)
def test_valid_examples_pass_strict_validation(example):
    validate_resource(fhirjson.parse(json.dumps(example.for_patient("p1")).encode()))


def test_issues_name_each_element_and_stop_at_a_bound():
    response = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "item": [{"linkId": str(i), "answer": [{"valueInteger": str(i)}]} for i in range(50)],
    }
    with pytest.raises(FhirError) as raised:
        validate_resource(fhirjson.parse(json.dumps(response).encode()))
    issues = raised.value.issues
    assert raised.value.status == 400 and len(issues) == 20
    assert issues[3].expression == ["QuestionnaireResponse.item[3].answer[0].valueInteger"]

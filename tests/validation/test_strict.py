"""The strict walk's parts, without a server: element tables cover every R4B primitive, reference and narrative
syntax row by row, the parser resolves no entity, and nothing the library ships is refused (no false refusals)."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import pytest
from lxml import etree

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.validation import definitions, validate_resource
from fhir_server.validation.bindings import required_codes
from fhir_server.validation.formats import canonical_problem, reference_problem
from fhir_server.validation.narrative import _parser, narrative_problems
from fhir_server.validation.resource import check
from fhir_server.validation.structure import MAX_ISSUES
from tests.library.examples import QUESTIONNAIRES, TERMINOLOGY, all_examples

NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def test_element_tables_come_from_the_r4_definitions():
    answer = definitions.children("QuestionnaireResponse", "QuestionnaireResponse.item.answer")
    assert answer["valueInteger"].type == "integer"
    assert answer["valueBoolean"].type == "boolean"
    assert answer["valueDecimal"].type == "decimal"
    assert answer["valueString"].type == "string"
    assert answer["valueReference"].type == "Reference"
    assert answer["item"].element.children == ("QuestionnaireResponse", "QuestionnaireResponse.item")
    assert definitions.children("Reference", "Reference")["reference"].type == "string"
    patient = definitions.children("Patient", "Patient")
    assert patient["gender"].element.binding == ("required", "http://hl7.org/fhir/ValueSet/administrative-gender")
    assert "female" in (required_codes(patient["gender"].element.binding[1]) or ())
    assert patient["contained"].type == "Resource" and patient["_birthDate"].type == "date"
    # R4, not R4B: Evidence.exposureBackground exists; ActivityDefinition.subjectCanonical does not
    assert "exposureBackground" in definitions.children("Evidence", "Evidence")
    assert "subjectCanonical" not in definitions.children("ActivityDefinition", "ActivityDefinition")


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
        "urn:oid:3.1",
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


@pytest.mark.parametrize("reference", ["urn:uuid:not-a-uuid", "urn:uuid:0F8FAD5B-D9CB-469F-A165-70867728950E"])
def test_a_urn_uuid_that_is_no_lowercase_uuid_is_warned_not_refused(reference):
    # HL7's validator accepts it (a URN that names nothing does not resolve); it cannot be what the sender meant
    report = check(
        {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": reference}}
    )
    assert not report.errors
    assert [i.severity for i in report.issues] == ["warning"] and report.issues[0].expression == [
        "Flag.subject.reference"
    ]


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
    assert raised.value.status == 400 and len(issues) == MAX_ISSUES
    assert issues[3].expression == ["QuestionnaireResponse.item[3].answer[0].valueInteger"]


def test_a_string_over_one_megabyte_is_refused():
    # R4 §2.1.28.0.1; the HTTP tests' servers take smaller bodies, so this one is judged directly
    name = {"family": "x" * (1024 * 1024 + 1)}
    errors = check({"resourceType": "Patient", "name": [name]}).errors
    assert [e.expression for e in errors] == [["Patient.name[0].family"]]
    assert "1 MB" in errors[0].diagnostics
    assert not check({"resourceType": "Patient", "name": [{"family": "x" * 1024 * 1024}]}).errors
    # a Binary's content is not a string: R4 sets it no limit (the request size limit bounds it)
    content = base64.b64encode(b"%PDF" * (300 * 1024)).decode()  # 1.2 MB of PDF, 1.6 MB as base64
    assert not check({"resourceType": "Binary", "contentType": "application/pdf", "data": content}).errors

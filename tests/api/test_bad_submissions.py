"""Strict submission validation (issue 15, finding 6; docs/security.md "Bad input"): one table of bad submissions,
each sent by POST, by PUT, inside a transaction and to $validate.  Every row is refused with its status and issue
code, the issue's ``expression`` names the element, and nothing is stored: no resource with the row's identifier,
and no Observation, Flag or Provenance written by scoring.  Valid resources with rich narratives and every valid
reference form still store (tests/api/test_good_submissions.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.fhir import post, put

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
NS = 'xmlns="http://www.w3.org/1999/xhtml"'
QR = "QuestionnaireResponse"
ANSWER = f"{QR}.item[0].answer[0]"


def srs(uid: str) -> dict[str, Any]:
    """A completed SRS (34.1: below the cutoff, so scoring would raise a Flag)."""
    marks = zip(("relationship", "goals", "approach", "overall"), (85, 88, 80, 88), strict=True)
    return {
        "resourceType": QR,
        "identifier": {"system": "urn:test", "value": uid},
        "questionnaire": SRS,
        "status": "completed",
        "subject": {"reference": f"Patient/{uid}"},
        "authored": "2026-11-02T10:00:00+00:00",
        "item": [{"linkId": link_id, "answer": [{"valueInteger": mark}]} for link_id, mark in marks],
    }


def patient(uid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uid}]}


def observation(uid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:test", "value": uid}],
        "status": "final",
        "code": {"text": "x"},
    }


def answer(**value: Any) -> Callable[[dict[str, Any]], None]:
    def change(qr: dict[str, Any]) -> None:
        qr["item"][0]["answer"] = [value]

    return change


def setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``key`` (dotted, list indexes as numbers) to ``value``; ``None`` deletes it."""

    def change(resource: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        node: Any = resource
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


def duplicate_first_item(qr: dict[str, Any]) -> None:
    qr["item"].append({"linkId": "relationship", "answer": [{"valueInteger": 10}]})


def narrative(div: str) -> Callable[[dict[str, Any]], None]:
    return setting("text", {"status": "generated", "div": div})


def contained_narrative(qr: dict[str, Any]) -> None:
    qr["contained"] = [{"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": "<b>x</b>"}}]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[str], dict[str, Any]]
    change: Callable[[dict[str, Any]], None]
    status: int
    code: str
    expression: str
    in_transaction: bool = True  # a transaction resolves urn:uuid / conditional references before validating


def qr_case(id_: str, change: Any, status: int, code: str, expression: str, **kw: Any) -> Case:
    return Case(id_, srs, change, status, code, expression, **kw)


def ref_case(id_: str, reference: str, **kw: Any) -> Case:
    return qr_case(id_, setting("subject", {"reference": reference}), 400, "value", f"{QR}.subject.reference", **kw)


def div_case(id_: str, div: str) -> Case:
    return qr_case(id_, narrative(div), 400, "invariant", f"{QR}.text.div")


CASES = [
    # JSON types, on the answer the probe used and on other types and elements
    qr_case("integer-string", answer(valueInteger="1"), 400, "value", f"{ANSWER}.valueInteger"),
    qr_case("integer-leading-zero", answer(valueInteger="099"), 400, "value", f"{ANSWER}.valueInteger"),
    qr_case("integer-float", answer(valueInteger=85.0), 400, "value", f"{ANSWER}.valueInteger"),
    qr_case("integer-true", answer(valueInteger=True), 400, "value", f"{ANSWER}.valueInteger"),
    qr_case("integer-object", answer(valueInteger={"value": 1}), 400, "value", f"{ANSWER}.valueInteger"),
    qr_case("decimal-string", answer(valueDecimal="3.5"), 400, "value", f"{ANSWER}.valueDecimal"),
    qr_case("decimal-bool", answer(valueDecimal=False), 400, "value", f"{ANSWER}.valueDecimal"),
    qr_case("boolean-string", answer(valueBoolean="true"), 400, "value", f"{ANSWER}.valueBoolean"),
    qr_case("boolean-number", answer(valueBoolean=1), 400, "value", f"{ANSWER}.valueBoolean"),
    qr_case("datetime-number", setting("authored", 1793613600), 400, "value", f"{QR}.authored"),
    qr_case(
        "extension-integer",
        setting("_status", {"extension": [{"url": "urn:x", "valueInteger": "3"}]}),
        400,
        "value",
        f"{QR}._status.extension[0].valueInteger",
    ),
    Case("patient-active-string", patient, setting("active", "true"), 400, "value", "Patient.active"),
    Case(
        "patient-birth-number",
        patient,
        setting("multipleBirthInteger", 2.0),
        400,
        "value",
        "Patient.multipleBirthInteger",
    ),
    Case(
        "positive-int-zero",
        patient,
        setting("extension", [{"url": "urn:x", "valuePositiveInt": 0}]),
        400,
        "value",
        "Patient.extension[0].valuePositiveInt",
    ),
    Case(
        "positive-int-string",
        patient,
        setting("extension", [{"url": "urn:x", "valuePositiveInt": "5"}]),
        400,
        "value",
        "Patient.extension[0].valuePositiveInt",
    ),
    Case(
        "unsigned-int-negative",
        patient,
        setting("extension", [{"url": "urn:x", "valueUnsignedInt": -1}]),
        400,
        "value",
        "Patient.extension[0].valueUnsignedInt",
    ),
    Case(
        "observation-decimal-string",
        observation,
        setting("valueQuantity", {"value": "3.5"}),
        400,
        "value",
        "Observation.valueQuantity.value",
    ),
    Case(
        "component-integer-float",
        observation,
        setting("component", [{"code": {"text": "c"}, "valueInteger": 1.5}]),
        400,
        "value",
        "Observation.component[0].valueInteger",
    ),
    Case("uri-whitespace", patient, setting("implicitRules", "http://a b"), 400, "value", "Patient.implicitRules"),
    Case(
        "base64-garbage",
        patient,
        setting("photo", [{"contentType": "image/png", "data": "!!!!"}]),
        400,
        "value",
        "Patient.photo[0].data",
    ),
    Case("fhir-comments", patient, setting("fhir_comments", ["hidden"]), 400, "structure", "Patient.fhir_comments"),
    # the same linkId twice among siblings: the second answer was ignored
    qr_case("duplicate-linkid", duplicate_first_item, 422, "structure", f"{QR}.item[4]"),
    qr_case(
        "duplicate-linkid-in-progress",
        lambda qr: (duplicate_first_item(qr), setting("status", "in-progress")(qr)),
        422,
        "structure",
        f"{QR}.item[4]",
    ),
    # canonicals
    qr_case(
        "canonical-empty-version",
        setting("questionnaire", SRS.split("|")[0] + "|"),
        400,
        "value",
        f"{QR}.questionnaire",
    ),
    qr_case("canonical-no-url", setting("questionnaire", "|1.0.0"), 400, "value", f"{QR}.questionnaire"),
    qr_case("canonical-two-versions", setting("questionnaire", SRS + "|2"), 400, "value", f"{QR}.questionnaire"),
    qr_case(
        "canonical-extension",
        setting("extension", [{"url": "urn:x", "valueCanonical": "http://x/Q|"}]),
        400,
        "value",
        f"{QR}.extension[0].valueCanonical",
    ),
    # a scored measure needs a subject, and must be scorable
    qr_case("no-subject-flag-raised", setting("subject", None), 422, "required", f"{QR}.subject"),
    qr_case(
        "no-subject-high-scores",
        lambda qr: (setting("subject", None)(qr), answer(valueInteger=100)(qr)),
        422,
        "required",
        f"{QR}.subject",
    ),
    qr_case(
        "no-subject-in-progress",
        lambda qr: (setting("subject", None)(qr), setting("status", "in-progress")(qr)),
        422,
        "required",
        f"{QR}.subject",
    ),
    qr_case(
        "subject-identifier-only", setting("subject", {"identifier": {"value": "x"}}), 422, "required", f"{QR}.subject"
    ),
    qr_case(
        "subject-not-a-patient", setting("subject", {"reference": "Group/g1"}), 422, "value", f"{QR}.subject.reference"
    ),
    # no contained resource #p1: R4's ref-1 refuses it before the scoring rules look
    qr_case("subject-contained", setting("subject", {"reference": "#p1"}), 400, "invariant", f"{QR}.subject"),
    qr_case(
        "subject-urn-uuid",
        setting("subject", {"reference": f"urn:uuid:{'0' * 8}-0000-4000-8000-{'0' * 12}"}),
        422,
        "value",
        f"{QR}.subject.reference",
        in_transaction=False,
    ),
    # empty values (R4 JSON has none)
    qr_case("empty-array", setting("basedOn", []), 400, "structure", f"{QR}.basedOn"),
    qr_case("empty-object", setting("encounter", {}), 400, "structure", f"{QR}.encounter"),
    qr_case("empty-string-uri", setting("implicitRules", ""), 400, "value", f"{QR}.implicitRules"),
    qr_case("empty-answer-object", answer(), 400, "structure", f"{ANSWER}"),
    # references
    ref_case("ref-type-only", "Patient/"),
    ref_case("ref-javascript", "javascript:alert(1)"),
    ref_case("ref-oid-bad", "urn:oid:9.9", in_transaction=False),
    ref_case("ref-unknown-type", "Frobnicator/1"),
    ref_case("ref-id-too-long", "Patient/" + "a" * 65),
    ref_case("ref-id-space", "Patient/a b"),
    ref_case("ref-bad-history", "Patient/a/_history/"),
    ref_case("ref-ftp", "ftp://example.org/Patient/1"),
    ref_case("ref-data", "data:text/html,<script>alert(1)</script>"),
    ref_case("ref-protocol-relative", "//evil.example/Patient/1"),
    ref_case("ref-http-no-host", "http:///Patient/1"),
    ref_case("ref-conditional-outside-transaction", "Patient?identifier=x", in_transaction=False),
    ref_case("ref-local-bad", "#a b"),
    qr_case("ref-author", setting("author", {"reference": "Practitioner/"}), 400, "value", f"{QR}.author.reference"),
    Case(
        "ref-observation-derived-from",
        observation,
        setting("derivedFrom", [{"reference": "javascript:x"}]),
        400,
        "value",
        "Observation.derivedFrom[0].reference",
    ),
    qr_case(
        "ref-in-contained",
        setting(
            "contained",
            [{"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "javascript:x"}}],
        ),
        400,
        "value",
        f"{QR}.contained[0].managingOrganization.reference",
    ),
    # narratives (txt-1, txt-2)
    div_case("div-script", f"<div {NS}><script>alert(1)</script>hi</div>"),
    div_case("div-img-onerror", f'<div {NS}><img src="x.png" onerror="alert(1)"/></div>'),
    div_case("div-a-onclick", f'<div {NS}><a onclick="steal()">hi</a></div>'),
    div_case("div-img-javascript", f'<div {NS}><img src="javascript:alert(1)"/></div>'),
    div_case("div-href-javascript-tab", f'<div {NS}><a href=" java&#9;script:alert(1)">x</a></div>'),
    div_case("div-href-data", f'<div {NS}><a href="data:text/html;base64,PHNjcmlwdD4=">x</a></div>'),
    div_case("div-style-url", f'<div {NS}><span style="background:url(javascript:alert(1))">x</span></div>'),
    div_case("div-iframe", f'<div {NS}><iframe src="https://example.org/"/>x</div>'),
    div_case("div-form", f'<div {NS}><form><input name="q"/></form>x</div>'),
    div_case("div-style-element", f"<div {NS}><style>p {{}}</style>x</div>"),
    div_case("div-svg", f'<div {NS}><svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>x</div>'),
    div_case("div-xlink", f'<div {NS} xmlns:xl="http://www.w3.org/1999/xlink"><a xl:href="https://e.org">x</a></div>'),
    div_case("div-not-xhtml", "just some text"),
    div_case("div-no-namespace", "<div>hello</div>"),
    div_case("div-root-p", f"<p {NS}>hello</p>"),
    div_case("div-unclosed", f"<div {NS}><p>unclosed</div>"),
    div_case("div-html-entity", f"<div {NS}>a&nbsp;b</div>"),
    div_case("div-xml-declaration", f'<?xml version="1.0"?><div {NS}>x</div>'),
    div_case("div-xxe", f'<!DOCTYPE div [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><div {NS}>&xxe;</div>'),
    div_case(
        "div-entity-bomb",
        f'<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><div {NS}>&b;&b;&b;</div>',
    ),
    div_case("div-processing-instruction", f'<div {NS}><?php echo "x"; ?>x</div>'),
    div_case("div-whitespace-only", f"<div {NS}>  \n </div>"),
    div_case("div-comment-only", f"<div {NS}><!-- nothing --></div>"),
    qr_case("div-contained", contained_narrative, 400, "invariant", f"{QR}.contained[0].text.div"),
]


def _counts(client) -> dict[str, int]:
    return {
        t: client.get(f"/{t}", params={"_summary": "count"}).json()["total"]
        for t in ("Observation", "Flag", "Provenance")
    }


def _issue(outcome: dict[str, Any], code: str) -> dict[str, Any]:
    assert outcome["resourceType"] == "OperationOutcome", outcome
    found = [i for i in outcome["issue"] if i["code"] == code and i.get("severity") in ("error", "fatal")]
    assert found, outcome
    return found[0]


def _send(client, interaction: str, resource: dict[str, Any], uid: str):
    resource_type = resource["resourceType"]
    if interaction == "POST":
        return post(client, f"/{resource_type}", resource)
    if interaction == "PUT":
        return put(client, f"/{resource_type}/{uid}", {**resource, "id": uid})
    entries = [
        {"resource": patient(uid), "request": {"method": "POST", "url": "Patient"}},
        {"resource": resource, "request": {"method": "POST", "url": resource_type}},
    ]
    return post(client, "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})


@pytest.mark.parametrize("interaction", ["POST", "PUT", "transaction"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_submission_is_refused_and_nothing_is_stored(client, uid, case, interaction):
    if interaction == "transaction" and not case.in_transaction:
        pytest.skip("a transaction resolves this reference form itself (tests/api/test_transaction.py)")
    resource = case.build(uid)
    case.change(resource)
    before = _counts(client)
    answer = _send(client, interaction, resource, uid)
    assert answer.status_code == case.status, answer.text[:500]
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert "root:" not in answer.text and "Traceback" not in answer.text  # no XXE, no stack trace
    issue = _issue(answer.json(), case.code)
    assert case.expression in issue["expression"], issue
    if interaction == "transaction":
        assert "Bundle.entry[1]" in issue["expression"], issue
    for resource_type in {resource["resourceType"], "Patient"}:
        found = client.get(f"/{resource_type}", params={"identifier": f"urn:test|{uid}", "_summary": "count"})
        assert found.json()["total"] == 0, resource_type
    assert _counts(client) == before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_validate_operation_reports_the_same_problem(client, uid, case):
    resource = case.build(uid)
    case.change(resource)
    answer = post(client, f"/{resource['resourceType']}/$validate", resource)
    assert answer.status_code == 200, answer.text[:500]
    assert case.expression in _issue(answer.json(), case.code)["expression"]


def test_a_batch_refuses_the_bad_entry_and_stores_the_good_one(client, uid):
    bad = srs(uid)
    answer(valueInteger="1")(bad)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": bad, "request": {"method": "POST", "url": QR}},
            {"resource": patient(uid), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    entries = post(client, "/", bundle).json()["entry"]
    assert entries[0]["response"]["status"].startswith("400")
    assert f"{ANSWER}.valueInteger" in _issue(entries[0]["response"]["outcome"], "value")["expression"]
    assert entries[1]["response"]["status"].startswith("201")
    assert client.get(f"/{QR}", params={"identifier": f"urn:test|{uid}", "_summary": "count"}).json()["total"] == 0


def test_a_patch_cannot_bring_in_a_bad_value(client, uid):
    created = post(client, f"/{QR}", srs(uid))
    assert created.status_code == 201, created.text
    operations = [{"op": "replace", "path": "/item/0/answer/0/valueInteger", "value": "1"}]
    answer = client.patch(
        f"/{QR}/{created.json()['id']}", json=operations, headers={"Content-Type": "application/json-patch+json"}
    )
    assert answer.status_code == 400, answer.text
    assert f"{ANSWER}.valueInteger" in _issue(answer.json(), "value")["expression"]
    current = client.get(f"/{QR}/{created.json()['id']}").json()
    assert current["meta"]["versionId"] == "1" and current["item"][0]["answer"][0]["valueInteger"] == 85

"""Bundle and in-resource reference rules (bundles.py, local_refs.py): for each rule a valid and an invalid example
of our own, with every error expected as "code @ expression" (all of severity error) — none for the valid ones."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.validation.bundles import bundle_issues, is_absolute, restful
from fhir_server.validation.local_refs import local_ref_issues
from fhir_server.validation.resource import check

BASE = "http://example.org/fhir/"
UUID_C = "urn:uuid:6f0b5b1e-8c6e-4f4f-9d3a-0c6a1f2e3b4c"
UUID_P = "urn:uuid:0d5e7c4d-ff7d-4b5e-8a2a-1f2b3c4d5e6f"
UUID_O = "urn:uuid:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
ORG = {"resourceType": "Organization", "id": "org1", "name": "Clinic"}
OUTCOME = {"resourceType": "OperationOutcome", "issue": []}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def patient(pid: str | None = "p1", **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **({"id": pid} if pid else {}), **more}


def observation(oid: str | None = "o1", subject: str = "Patient/p1", **more: Any) -> dict[str, Any]:
    body = {"status": "final", "code": {"text": "weight"}, "subject": ref(subject)}
    return {"resourceType": "Observation", **({"id": oid} if oid else {}), **body, **more}


def versioned(version: str) -> dict[str, Any]:
    return observation(meta={"versionId": version})


def composition(subject: str = "Patient/p1", *entries: str, **more: Any) -> dict[str, Any]:
    body = {"status": "final", "type": {"text": "note"}, "subject": ref(subject), "date": "2024-05-01"}
    sections = {"section": [{"title": "Results", "entry": [ref(e) for e in entries]}]} if entries else {}
    return {
        "resourceType": "Composition",
        "id": "c1",
        **body,
        "author": [ref(subject)],
        "title": "T",
        **sections,
        **more,
    }


def header(focus: str) -> dict[str, Any]:
    source = {"endpoint": "http://example.org/source"}
    event = {"system": "http://example.org/events", "code": "notify"}
    return {"resourceType": "MessageHeader", "id": "h1", "eventCoding": event, "source": source, "focus": [ref(focus)]}


def value_set(vid: str, url: str) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "id": vid, "url": url, "status": "draft"}


def questionnaire(answers: str) -> dict[str, Any]:
    item = {"linkId": "1", "type": "choice", "answerValueSet": answers}
    return {"resourceType": "Questionnaire", "status": "draft", "item": [item]}


def entry(full_url: str | None, resource: dict[str, Any] | None, **more: Any) -> dict[str, Any]:
    url = {"fullUrl": full_url} if full_url is not None else {}
    return {**url, **({"resource": resource} if resource is not None else {}), **more}


def at(url: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return entry(url, resource, search={"mode": mode})


def post(full_url: str | None, resource: dict[str, Any]) -> dict[str, Any]:
    return entry(full_url, resource, request={"method": "POST", "url": resource["resourceType"]})


def bundle(kind: str, *entries: dict[str, Any], link: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, **({"link": link} if link else {}), "entry": list(entries)}


def one(full_url: str | None, resource: dict[str, Any] | None, kind: str = "collection") -> dict[str, Any]:
    return bundle(kind, entry(full_url, resource))


def links(*relations: str) -> list[dict[str, str]]:
    return [{"relation": relation, "url": f"{BASE}Patient?page={i}"} for i, relation in enumerate(relations)]


def document(*entries: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**bundle("document", *entries), **more}


GOOD = [
    entry(f"{BASE}Composition/c1", composition("Patient/p1", "Observation/o1")),
    entry(f"{BASE}Patient/p1", patient()),
    entry(f"{BASE}Observation/o1", observation()),
]


def versions(reference: str, *observations: dict[str, Any]) -> dict[str, Any]:
    head = entry(f"{BASE}Composition/c1", composition("Patient/p1", reference))
    return document(head, GOOD[1], *(entry(f"{BASE}Observation/o1", o) for o in observations))


PROVENANCE = {"resourceType": "Provenance", "id": "pv1", "target": [ref("Composition/c1")]}
PROVENANCE |= {"recorded": "2024-05-01T10:00:00Z", "agent": [{"who": ref("Patient/p1")}]}
CSS = entry(f"{BASE}Binary/css", {"resourceType": "Binary", "id": "css", "contentType": "text/css"})
STYLE = [{"relation": "stylesheet", "url": "Binary/css"}]
OUTSIDE = ref("http://other.org/fhir/Practitioner/9")
DEFINITION = [{"url": f"{BASE}x", "valueReference": ref(f"{BASE}ValueSet/v")}]
NOT_AN_ENTRY = "http://example.org/vs/a"
TWO_PATIENTS = [entry(f"{BASE}Patient/p1", patient(meta={"versionId": v})) for v in ("1", "2")]
SUBJECT = "Bundle.entry[0].resource.subject.reference"
AUTHOR = "Bundle.entry[0].resource.author[0].reference"
SECTION = "Bundle.entry[0].resource.section[0].entry[0].reference"
FIRST = "invalid @ Bundle.entry[0].resource"

BUNDLE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # entry.fullUrl is absolute (bundle-duplicate-id, mni-patientOverview-bundle-example1)
    ("fullUrl urn:uuid", one(UUID_P, patient()), []),
    ("fullUrl urn:oid", one("urn:oid:1.2.3.4", patient()), []),
    ("fullUrl other scheme", one("tag:example.org,2024:p1", patient()), []),
    ("fullUrl relative", one("Patient/p1", patient()), ["invalid @ Bundle.entry[0].fullUrl"]),
    # a RESTful fullUrl ends with the entry's type and id (bundle-with-contained)
    ("fullUrl RESTful, same id", one(f"{BASE}Patient/p1", patient()), []),
    ("fullUrl RESTful, other id", one(f"{BASE}Patient/p2", patient()), ["invalid @ Bundle.entry[0].fullUrl"]),
    ("fullUrl RESTful, no id", one(f"{BASE}Patient/p1", patient(None)), ["invalid @ Bundle.entry[0].fullUrl"]),
    ("fullUrl RESTful, no id, created", bundle("transaction", post(f"{BASE}Patient/new", patient(None))), []),
    ("fullUrl not RESTful, other id", one("http://example.org/people/42", patient()), []),
    # a canonical url is the fullUrl only when that is RESTful, with the id
    ("canonical url = RESTful fullUrl", one(f"{BASE}ValueSet/v1", value_set("v1", f"{BASE}ValueSet/v1")), []),
    (
        "canonical url = other fullUrl",
        one(NOT_AN_ENTRY, value_set("v1", NOT_AN_ENTRY)),
        ["invalid @ Bundle.entry[0].fullUrl"],
    ),
    # a fullUrl where the entry is the identity of its resource
    ("collection entry without fullUrl", one(None, patient()), ["invalid @ Bundle.entry[0]"]),
    ("searchset entry without fullUrl", one(None, patient(), "searchset"), []),
    ("transaction POST without fullUrl", bundle("transaction", post(None, observation(None))), []),
    # link relations (bundle-id-search-2, bundle-duplicate-ids-not)
    ("searchset pages", bundle("searchset", link=links("self", "next", "alternate", "alternate")), []),
    ("searchset next twice", bundle("searchset", link=links("next", "next")), ["invalid @ Bundle.link[1].relation"]),
    ("collection self twice", bundle("collection", link=links("self", "self")), ["invalid @ Bundle.link[1].relation"]),
    ("document with a next page", document(*GOOD, link=links("next")), ["invalid @ Bundle.link[0].relation"]),
    ("document stylesheet in the bundle", document(*GOOD, CSS, link=STYLE), []),
    ("document stylesheet missing", document(*GOOD, link=STYLE), ["not-found @ Bundle.link[0].relation"]),
    # documents and messages have a first resource
    ("document without entries", bundle("document"), ["invalid @ Bundle"]),
    ("message without a first resource", one(UUID_C, None, "message"), ["invalid @ Bundle.entry[0]"]),
    # the Composition's references resolve (mni-...-example1b, bundle-document-versioned-references-good/-bad)
    ("document, RESTful", document(*GOOD), []),
    (
        "document, urn:uuid",
        document(
            entry(UUID_C, composition(UUID_P, UUID_O)),
            entry(UUID_P, patient()),
            entry(UUID_O, observation(subject=UUID_P)),
        ),
        [],
    ),
    (
        "document, subject missing",
        document(entry(f"{BASE}Composition/c1", composition("Patient/p9"))),
        [f"not-found @ {SUBJECT}", f"not-found @ {AUTHOR}"],
    ),
    (
        "document, relative reference from a urn:uuid entry",
        document(entry(UUID_C, composition("Patient/p1")), entry(UUID_P, patient())),
        # so nothing links the Patient with the Composition either
        [f"invalid @ {SUBJECT}", f"invalid @ {AUTHOR}", "invalid @ Bundle.entry[1]"],
    ),
    ("document, versioned reference", versions("Observation/o1/_history/2", versioned("1"), versioned("2")), []),
    (
        "document, versioned reference to no version",
        versions("Observation/o1/_history/3", versioned("1"), versioned("2")),
        [f"invalid @ {SECTION}"],  # the Observations are linked backwards, through the Patient
    ),
    (
        "document, unversioned reference to two versions",
        versions("Observation/o1", versioned("1"), versioned("2")),
        [f"invalid @ {SECTION}"],
    ),
    (
        "document, another entry's reference to two versions",
        document(GOOD[0], *TWO_PATIENTS, GOOD[2]),
        [f"invalid @ {SUBJECT}", f"invalid @ {AUTHOR}", "invalid @ Bundle.entry[3].resource.subject.reference"],
    ),
    (
        "document, another entry's reference outside the bundle",
        document(*GOOD[:2], entry(f"{BASE}Observation/o1", observation(performer=[OUTSIDE]))),
        [],
    ),
    (
        "document, a definition outside the bundle",
        document(entry(f"{BASE}Composition/c1", composition(extension=DEFINITION)), GOOD[1]),
        [],
    ),
    # every entry of a document is linked with the Composition
    ("document, Provenance reached backwards", document(*GOOD, entry(f"{BASE}Provenance/pv1", PROVENANCE)), []),
    (
        "document, orphan entry",
        document(*GOOD, entry(f"{BASE}Patient/p2", patient("p2"))),
        ["invalid @ Bundle.entry[3]"],
    ),
    # the MessageHeader's focus resolves (bundle-with-contained)
    ("message focus", bundle("message", entry(UUID_C, header(UUID_P)), entry(UUID_P, patient())), []),
    (
        "message focus missing",
        bundle("message", entry(UUID_C, header(UUID_O)), entry(UUID_P, patient())),
        ["not-found @ Bundle.entry[0].resource.focus[0].reference"],
    ),
    # searchset entries (bundle-id-search-1..4, bundle-id-collection)
    (
        "searchset with modes",
        bundle(
            "searchset",
            at(f"{BASE}Patient/p1", patient(), "match"),
            at(f"{BASE}Observation/o1", observation(), "include"),
            at(UUID_O, OUTCOME, "outcome"),
            link=[{"relation": "self", "url": f"{BASE}Patient?_revinclude=Observation:subject"}],
        ),
        [],
    ),
    ("searchset without modes", one(UUID_P, patient(None), "searchset"), []),
    ("collection without ids", one(UUID_P, patient(None)), []),
    ("searchset match without id", bundle("searchset", at(UUID_P, patient(None), "match")), [FIRST]),
    ("searchset include without id", bundle("searchset", at(UUID_O, observation(None), "include")), [FIRST]),
    (
        "searchset match of another type",
        bundle(
            "searchset",
            at(f"{BASE}Observation/o1", observation(), "match"),
            link=[{"relation": "self", "url": f"{BASE}?_type=Patient,Group&name=x"}],
        ),
        [FIRST],
    ),
    (
        "searchset outcome not an OperationOutcome",
        bundle("searchset", at(f"{BASE}Patient/p1", patient(), "outcome")),
        [FIRST],
    ),
    # transactions: a urn:uuid names an entry
    (
        "transaction urn:uuid",
        bundle("transaction", post(UUID_P, patient(None)), post(None, observation(None, subject=UUID_P))),
        [],
    ),
    ("transaction reference to the server", bundle("transaction", post(None, observation(None, "Patient/3"))), []),
    (
        "transaction urn:uuid missing",
        bundle("transaction", post(None, observation(None, subject=UUID_P))),
        ["not-found @ Bundle.entry[0].resource.subject.reference"],
    ),
    ("batch urn:uuid not checked", bundle("batch", post(None, observation(None, subject=UUID_P))), []),
    # Bundles inside Parameters and inside entries
    (
        "Bundle in Parameters",
        {"resourceType": "Parameters", "parameter": [{"name": "b", "resource": one("Patient/1", patient("1"))}]},
        ["invalid @ Parameters.parameter[0].resource.entry[0].fullUrl"],
    ),
    (
        "Bundle in a Bundle",
        one(UUID_C, one("Patient/1", patient("1"))),
        ["invalid @ Bundle.entry[0].resource.entry[0].fullUrl"],
    ),
]


def errors(issues: list[Any]) -> list[str]:
    assert all(issue.severity == "error" for issue in issues)
    return [f"{issue.code} @ {issue.expression[0]}" for issue in issues]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in BUNDLE_CASES], ids=[c[0] for c in BUNDLE_CASES])
def test_bundle_rules(resource: dict[str, Any], expected: list[str]) -> None:
    assert errors(bundle_issues(resource)) == expected


def holding(resource: dict[str, Any], *contained: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "contained": list(contained)}


def org(oid: str | None, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Organization", **({"id": oid} if oid else {}), "name": "x", **more}


LONG = "o" * 65
SIBLINGS = (org("o", partOf=ref("#sib")), org("sib", endpoint=[ref("#")]))
PEOPLE = bundle(
    "collection", entry(UUID_P, holding(patient(), ORG)), entry(UUID_O, observation(performer=[ref("#org1")]))
)
SNAPSHOT = {"element": [{"id": "Patient", "path": "Patient"}]}
PROFILE = {"resourceType": "StructureDefinition", "url": f"{BASE}StructureDefinition/x", "name": "X", "status": "draft"}
DEFINES = {
    **PROFILE,
    "kind": "resource",
    "abstract": False,
    "type": "Patient",
    "snapshot": SNAPSHOT,
    "differential": SNAPSHOT,
}
NAMES_G_TWICE = [{"family": "X", "given": ["A", "B"], "_given": [{"id": "g"}, {"id": "g"}]}]

LOCAL_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # "#x" names a contained resource of the same container (contained, bundle-with-contained)
    ("#id contained", holding(observation(subject="#pat"), patient("pat")), []),
    # "#id not contained" and "#id across Bundle entries": ref-1's (the invariant), see the test below
    ("# and #sibling from contained resources", holding(patient(), *SIBLINGS), []),
    (
        "# from the container",
        patient(managingOrganization=ref("#")),
        ["structure @ Patient.managingOrganization.reference"],
    ),
    ("#id canonical", holding(questionnaire("#vs"), value_set("vs", f"{BASE}vs")), []),
    ("#id canonical not contained", questionnaire("#vs"), ["invalid @ Questionnaire.item[0].answerValueSet"]),
    # element ids are unique within a resource (mni-patientOverview-bundle-example1b)
    (
        "element ids distinct",
        patient(identifier=[{"id": "a"}], name=[{"id": "b"}], _birthDate={"id": "c"}, birthDate="2000-01-01"),
        [],
    ),
    (
        "element id repeated",
        patient(identifier=[{"id": "a", "value": "1"}], name=[{"id": "a", "family": "X"}]),
        ["business-rule @ Patient.name[0]"],
    ),
    ("element id repeated on a primitive", patient(name=NAMES_G_TWICE), ["business-rule @ Patient.name[0].given[1]"]),
    (
        "element ids of other resources and the resource id",
        holding(
            patient("x", identifier=[{"id": "x"}], managingOrganization=ref("#org1")),
            org("org1", identifier=[{"id": "x"}]),
        ),
        [],
    ),
    (
        "element ids of Bundle entries repeated",
        bundle("collection", entry(UUID_P, patient(), id="e1"), entry(UUID_O, observation(), id="e1")),
        ["business-rule @ Bundle.entry[1]"],
    ),
    ("snapshot repeats differential ids", DEFINES, []),
    # ids of resources inside others (contained-resource)
    (
        "contained id too long",
        holding(patient(managingOrganization=ref("#" + LONG)), org(LONG)),
        ["invalid @ Patient.contained[0].id"],
    ),
    (
        "contained id bad characters",
        holding(patient(managingOrganization=ref("#org_1")), org("org_1")),
        ["invalid @ Patient.contained[0].id"],
    ),
    ("contained id missing", holding(patient(), org(None, endpoint=[ref("#")])), ["invalid @ Patient.contained[0]"]),
    (
        "contained id repeated",
        holding(patient(managingOrganization=ref("#org1")), ORG, ORG),
        ["duplicate @ Patient.contained[1]"],
    ),
    ("entry resource id bad characters", one(UUID_P, patient("p_1")), ["invalid @ Bundle.entry[0].resource.id"]),
]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in LOCAL_CASES], ids=[c[0] for c in LOCAL_CASES])
def test_local_reference_rules(resource: dict[str, Any], expected: list[str]) -> None:
    assert errors(local_ref_issues(resource)) == expected


@pytest.mark.parametrize(
    ("resource", "where"),
    [
        (holding(observation(subject="#pat"), patient("x")), "Observation.subject"),
        (PEOPLE, "Bundle.entry[1].resource.performer[0]"),
    ],
    ids=["#id not contained", "#id across Bundle entries"],
)
def test_a_local_reference_to_nothing_is_ref_1s_to_report_once(resource: dict[str, Any], where: str) -> None:
    issues = check(resource).errors
    assert [(i.code, i.expression) for i in issues if "ref-1" in i.diagnostics] == [("invariant", [where])]
    assert not [i for i in issues if i.rule == "reference"]  # not reported twice


def test_messages_name_the_value() -> None:
    [issue] = bundle_issues(one("Patient/p1", patient()))
    assert issue.diagnostics == "Bundle.entry[0].fullUrl: The fullUrl must be an absolute URL (not 'Patient/p1')"
    [issue] = local_ref_issues(patient(identifier=[{"id": "2"}], name=[{"id": "2", "family": "X"}]))
    assert issue.diagnostics.endswith("Duplicate id value '2'")
    [issue] = local_ref_issues(holding(patient(managingOrganization=ref("#" + LONG)), org(LONG)))
    assert issue.diagnostics.endswith("Invalid Resource id: Too long (65 chars)")


@pytest.mark.parametrize(
    ("url", "absolute", "rest"),
    [
        ("http://example.org/fhir/Patient/1", True, ("Patient", "1")),
        ("https://example.org:8443/r4/Observation/a.b-c/_history/2", True, ("Observation", "a.b-c")),
        ("Patient/1", False, ("Patient", "1")),
        (UUID_P, True, None),
        ("http://example.org/fhir/Widget/1", True, None),  # not an R4 resource type
        ("urn:uuid", True, None),
        ("Urn:x", False, None),
        ("mailto:", False, None),
    ],
)
def test_url_forms(url: str, absolute: bool, rest: tuple[str, str] | None) -> None:
    assert is_absolute(url) is absolute
    match = restful(url)
    assert (match["type"], match["id"]) == rest if rest else match is None


def test_what_is_not_fhir_is_left_to_the_structure_walk() -> None:
    odd = {"resourceType": "Patient", "madeUp": {"id": "a"}, "name": [None, {"id": "a"}], "contained": "x"}
    assert local_ref_issues(odd) == []
    assert bundle_issues({"resourceType": "Bundle", "entry": "x", "link": [1]}) == []
    assert local_ref_issues({"resourceType": "Widget", "id": "x"}) == []

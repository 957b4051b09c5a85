"""Acceptance for an honest CapabilityStatement (issue "Integrators at scale", part 3): a request for everything
/metadata declares, generated from the statement itself, against a running server with a seeded resource of every
declared type, on both databases.  Every type x interaction (and the conditional and versioning behaviours it
claims), every search parameter (strict handling: an unknown one would be a 400), every _include and _revinclude,
every operation at the levels its OperationDefinition declares, and every system interaction must answer, none
with 404, 405 or a 5xx; most must simply succeed.  What is not declared is refused clearly.

The seeded resources come from tests/support/minimal_resources.py (one valid resource per R4 type); the server
has a database of its own, since seeding a SearchParameter adds a search parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.search.registry import default_registry
from fhir_server.validation import validate_resource
from tests.api.fhir import FHIR_JSON, assert_outcome
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.minimal_resources import minimal
from tests.support.server import ServerThread

HL7 = "http://hl7.org/fhir/OperationDefinition"
BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"
# The levels of the HL7 OperationDefinitions the statement may name, as their definitions declare them (R4 4.0.1
# profiles-resources.json; SDC 4.0.0's OperationDefinition-QuestionnaireResponse-extract.json).  Ours are read from
# the server, where their canonical URL must resolve.
PERIOD = "periodStart=2026-01&periodEnd=2026-12"
HL7_LEVELS = {
    f"{HL7}/Resource-validate": {"type", "instance"},
    f"{HL7}/Patient-everything": {"type", "instance"},
    f"{HL7}/CodeSystem-lookup": {"type"},
    f"{HL7}/CodeSystem-validate-code": {"type", "instance"},
    f"{HL7}/ValueSet-validate-code": {"type", "instance"},
    f"{HL7}/ValueSet-expand": {"type", "instance"},
    "http://hl7.org/fhir/uv/sdc/OperationDefinition/QuestionnaireResponse-extract": {"type", "instance"},
    f"{HL7}/Measure-evaluate-measure": {"type", "instance"},
    # Bulk Data Access 2.0.0 (STU2): OperationDefinition-export, -patient-export, -group-export
    f"{BULK}/export": {"system"},
    f"{BULK}/patient-export": {"type"},
    f"{BULK}/group-export": {"instance"},
    # Subscriptions Backport 1.1.0 (STU 1.1): OperationDefinition-backport-subscription-status, -events
    f"{BACKPORT}/backport-subscription-status": {"type", "instance"},
    f"{BACKPORT}/backport-subscription-events": {"instance"},
}
# What each statement we claim to instantiate requires (its SHALL interactions, and for Bulk Data the operations
# its server CapabilityStatement expects: $export at system, Patient and Group level, Group read and search),
# checked against ours.
INSTANTIATED = {
    "http://hl7.org/fhir/uv/sdc/CapabilityStatement/sdc-form-response-manager": {
        "QuestionnaireResponse": {"create", "update", "search-type", "read"},
    },
    "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data|2.0.0": {"Group": {"read", "search-type"}},
    "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4": {
        "Subscription": {"create", "update", "read", "delete"},
    },
}
INSTANTIATED_OPERATIONS = {
    "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data|2.0.0": {
        None: f"{BULK}/export",
        "Patient": f"{BULK}/patient-export",
        "Group": f"{BULK}/group-export",
    },
    "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4": {
        "Subscription": f"{BACKPORT}/backport-subscription-status",
    },
}
# Asynchronous operations (the FHIR async pattern): kicked off with this header; each job is cancelled at once.
ASYNC = {"export": {"Prefer": "respond-async"}}
FIT = "http://fit-fhir.org/fhir"
RESPONDENT = (f"{FIT}/CodeSystem/fit-respondent", f"{FIT}/ValueSet/fit-respondent", "self")
SEARCH_VALUES = {
    "token": "x",
    "string": "x",
    "date": "ge2020-01-01",
    "number": "1",
    "quantity": "1",
    "uri": "http://example.org/x",
    "reference": "x",
}
RESULT_VALUES = {
    "_count": "1",
    "_total": "accurate",
    "_summary": "count",
    "_elements": "id",
    "_sort": "-_lastUpdated",
    "_include": "Observation:subject",
    "_revinclude": "Provenance:target",
}
STRICT = {"Prefer": "handling=strict"}
PATCH = {"Content-Type": "application/json-patch+json"}
FAILED = (404, 405)


@pytest.fixture(scope="module")
def contract(backend: str) -> Iterator[dict[str, Any]]:
    database = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    accept = {"Accept": FHIR_JSON["Content-Type"]}
    with (
        database as url,
        ServerThread(Settings(database_url=url, _env_file=None), backend) as running,
        httpx.Client(base_url=running.fhir_base, timeout=60, headers=accept) as c,
    ):
        types = [r["type"] for r in c.get("/metadata").json()["rest"][0]["resource"]]
        seeds = {t: _created(c.post(f"/{t}", json=minimal(t), headers=FHIR_JSON)) for t in types}
        statement = c.get("/metadata").json()  # after seeding: the seeded SearchParameter is declared too
        yield {"client": c, "statement": statement, "seeds": seeds, "rest": statement["rest"][0]}


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text[:500]
    return response.json()["id"]


def _check(failures: list[str], label: str, response: httpx.Response, expected: set[int] | None = None) -> None:
    status = response.status_code
    wrong = status in FAILED or status >= 500 or (expected is not None and status not in expected)
    if wrong:
        failures.append(f"{label}: {status} {response.text[:200]}")


def _searches_fail(c: httpx.Client, queries: list[tuple[str, str, str]]) -> list[str]:
    """(type, parameter, value) searches with strict handling, 8 at a time; what does not answer 200."""

    def run(query: tuple[str, str, str]) -> str | None:
        resource_type, name, value = query
        response = c.get(f"/{resource_type}", params={name: value}, headers=STRICT)
        failed = response.status_code != 200
        return f"{resource_type}?{name}={value}: {response.status_code} {response.text[:200]}" if failed else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [failure for failure in pool.map(run, queries) if failure]


def test_the_statement_is_valid_r4_and_claims_only_what_is_met(contract):
    statement, rest = contract["statement"], contract["rest"]
    validate_resource(statement)
    declared = {r["type"]: {i["code"] for i in r["interaction"]} for r in rest["resource"]}
    assert statement["instantiates"] == list(INSTANTIATED)
    for required in INSTANTIATED.values():
        for resource_type, interactions in required.items():
            assert interactions <= declared[resource_type], resource_type
    operations = {r["type"]: {o["definition"] for o in r.get("operation", [])} for r in rest["resource"]}
    operations[None] = {o["definition"] for o in rest.get("operation", [])}
    for required in INSTANTIATED_OPERATIONS.values():
        for resource_type, definition in required.items():
            assert definition in operations[resource_type], (resource_type, definition)
    assert "Parameters" not in declared
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}


def test_every_declared_interaction_answers(contract):
    c, seeds, failures = contract["client"], contract["seeds"], []
    for resource in contract["rest"]["resource"]:
        resource_type, resource_id = resource["type"], seeds[resource["type"]]
        for interaction in resource["interaction"]:
            requests = _interaction(c, interaction["code"], resource_type, resource_id)
            if not requests:
                failures.append(f"{resource_type}: no request known for the interaction {interaction['code']}")
            for label, response, expected in requests:
                _check(failures, f"{resource_type} {label}", response, expected)
        for label, response, expected in _claims(c, resource, resource_id):
            _check(failures, f"{resource_type} {label}", response, expected)
    assert not failures, "\n".join(failures)


def _interaction(c: httpx.Client, code: str, t: str, i: str) -> list[tuple[str, httpx.Response, set[int]]]:
    """The request(s) for one declared interaction on the seeded resource ``t/i``, with the statuses expected."""
    if code == "read":
        return [(code, c.get(f"/{t}/{i}"), {200})]
    if code == "vread":
        return [(code, c.get(f"/{t}/{i}/_history/1"), {200})]
    if code == "update":
        return [(code, c.put(f"/{t}/{i}", json=minimal(t, i), headers=FHIR_JSON), {200})]
    if code == "patch":
        return [(code, c.patch(f"/{t}/{i}", json=_tag(), headers=PATCH), {200})]
    if code == "delete":
        doomed = _created(c.post(f"/{t}", json=minimal(t), headers=FHIR_JSON))
        return [(code, c.delete(f"/{t}/{doomed}"), {200}), ("read after delete", c.get(f"/{t}/{doomed}"), {410})]
    if code == "history-instance":
        return [(code, c.get(f"/{t}/{i}/_history"), {200})]
    if code == "history-type":
        return [(code, c.get(f"/{t}/_history"), {200})]
    if code == "create":
        return [(code, c.post(f"/{t}", json=minimal(t), headers=FHIR_JSON), {201})]
    if code == "search-type":
        return [
            (code, c.get(f"/{t}", params={"_id": i}), {200}),
            ("POST _search", c.post(f"/{t}/_search", data={"_id": i}), {200}),
        ]
    return []


def _tag() -> list[dict[str, Any]]:
    return [{"op": "add", "path": "/meta/tag", "value": [{"system": "http://example.org/tags", "code": "contract"}]}]


def _claims(c: httpx.Client, resource: dict[str, Any], resource_id: str) -> list[tuple[str, httpx.Response, set[int]]]:
    """The conditional and versioning behaviours a resource entry claims, each tried."""
    t, out = resource["type"], []
    at, body = f"/{t}/{resource_id}", minimal(t, resource_id)
    if resource.get("conditionalCreate"):
        matched = c.post(f"/{t}", json=minimal(t), headers={**FHIR_JSON, "If-None-Exist": f"_id={resource_id}"})
        out.append(("conditional create (a match)", matched, {200}))
    if resource.get("conditionalUpdate"):
        out.append(
            ("conditional update", c.put(f"/{t}", params={"_id": resource_id}, json=body, headers=FHIR_JSON), {200})
        )
    if resource.get("conditionalDelete") in ("single", "multiple"):
        doomed = _created(c.post(f"/{t}", json=minimal(t), headers=FHIR_JSON))
        out.append(("conditional delete", c.delete(f"/{t}", params={"_id": doomed}), {200}))
    if resource.get("conditionalRead") == "full-support":
        latest = c.get(at).headers
        out.append(("If-None-Match", c.get(at, headers={"If-None-Match": latest["ETag"]}), {304}))
        out.append(("If-Modified-Since", c.get(at, headers={"If-Modified-Since": latest["Last-Modified"]}), {304}))
    if resource.get("versioning") == "versioned-update":
        out.append(("stale If-Match", c.put(at, json=body, headers={**FHIR_JSON, "If-Match": 'W/"999"'}), {412}))
    if resource.get("updateCreate"):
        new_id = f"uc-{resource_id}"
        out.append(("update as create", c.put(f"/{t}/{new_id}", json=minimal(t, new_id), headers=FHIR_JSON), {201}))
    if resource.get("readHistory"):
        out.append(("vread of an earlier version", c.get(f"{at}/_history/1"), {200}))
    return out


def test_every_declared_search_parameter_is_known(contract):
    registry = default_registry()
    queries = [
        (r["type"], p["name"], _search_value(registry, r["type"], p))
        for r in contract["rest"]["resource"]
        for p in r["searchParam"]
    ]
    assert len(queries) > 2000  # every R4 parameter of every declared type
    failures = _searches_fail(contract["client"], queries)
    for name in (p["name"] for p in contract["rest"]["searchParam"]):
        if name not in RESULT_VALUES:
            failures.append(f"rest.searchParam {name}: no value known to try it with")
    result = [("Observation", name, value) for name, value in RESULT_VALUES.items()]
    failures += _searches_fail(contract["client"], result)
    assert not failures, "\n".join(failures)


def _search_value(registry: Any, resource_type: str, param: dict[str, Any]) -> str:
    if param["type"] != "composite":
        return SEARCH_VALUES[param["type"]]
    composite = registry.by_url(param["definition"], resource_type)
    return "$".join(SEARCH_VALUES[component.type] for component, _ in registry.components(composite))


def test_every_declared_include_answers(contract):
    queries = []
    for resource in contract["rest"]["resource"]:
        queries += [(resource["type"], "_include", value) for value in resource.get("searchInclude", [])]
        queries += [(resource["type"], "_revinclude", value) for value in resource.get("searchRevInclude", [])]
    failures = _searches_fail(contract["client"], queries)
    assert not failures, "\n".join(failures)


def test_every_declared_operation_answers_at_its_levels(contract):
    c, seeds, failures = contract["client"], contract["seeds"], []
    context = _operation_context(c)
    declared = [(r["type"], op) for r in contract["rest"]["resource"] for op in r.get("operation", [])]
    declared += [(None, op) for op in contract["rest"].get("operation", [])]
    assert declared
    for resource_type, op in declared:
        levels = _levels(c, op["definition"])
        if levels is None:
            failures.append(f"{resource_type} ${op['name']}: {op['definition']} does not resolve")
            continue
        for level in sorted(levels):
            request = _operation_request(op["name"], level, resource_type, seeds, context)
            if request is None:
                failures.append(f"{resource_type} ${op['name']} at {level} level: no request known to try it")
                continue
            method, path, body, expected = request
            headers = {**(FHIR_JSON if body is not None else {}), **ASYNC.get(op["name"], {})}
            response = c.request(method, path, json=body, headers=headers)
            _check(failures, f"{method} {path}", response, expected)
            if response.status_code == 202 and "Content-Location" in response.headers:
                _check(failures, "cancel", c.delete(response.headers["Content-Location"]), {202})
    assert not failures, "\n".join(failures)


def _levels(c: httpx.Client, definition: str) -> set[str] | None:
    if definition in HL7_LEVELS:
        return HL7_LEVELS[definition]
    found = c.get("/OperationDefinition", params={"url": definition}).json().get("entry", [])
    if len(found) != 1:
        return None
    resource = found[0]["resource"]
    return {level for level in ("system", "type", "instance") if resource.get(level)}


def _operation_context(c: httpx.Client) -> dict[str, str]:
    """A client with a scored SRS session, and the library's respondent CodeSystem and ValueSet."""
    patient = _created(
        c.post("/Patient", json={"resourceType": "Patient", "birthDate": "1990-04-02"}, headers=FHIR_JSON)
    )
    response = _srs(patient)
    code_system = c.get("/CodeSystem", params={"url": RESPONDENT[0]}).json()["entry"][0]["resource"]["id"]
    value_set = c.get("/ValueSet", params={"url": RESPONDENT[1]}).json()["entry"][0]["resource"]["id"]
    stored = _created(c.post("/QuestionnaireResponse", json=response, headers=FHIR_JSON))
    return {"patient": patient, "response": stored, "code_system": code_system, "value_set": value_set}


def _srs(patient: str) -> dict[str, Any]:
    marks = {"relationship": 85, "goals": 88, "approach": 80, "overall": 88}
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{FIT}/Questionnaire/srs|1.0.2",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-11-20T16:45:00Z",
        "item": [{"linkId": k, "answer": [{"valueInteger": v}]} for k, v in marks.items()],
    }


def _operation_request(
    name: str, level: str, resource_type: str | None, seeds: dict[str, str], ctx: dict[str, str]
) -> tuple[str, str, Any, set[int]] | None:
    """(method, path, JSON body, the statuses a working operation answers) for one operation at one level."""
    system, valueset, code = RESPONDENT
    seed = f"/{resource_type}/{seeds.get(resource_type or '', '')}"
    patient, response = f"/Patient/{ctx['patient']}", f"/QuestionnaireResponse/{ctx['response']}"
    cs, vs = f"/CodeSystem/{ctx['code_system']}", f"/ValueSet/{ctx['value_set']}"
    requests = {
        ("validate", "type", resource_type): (
            "POST",
            f"/{resource_type}/$validate",
            minimal(resource_type) if resource_type else None,
        ),
        ("validate", "instance", resource_type): ("GET", f"{seed}/$validate", None),
        ("everything", "instance", "Patient"): ("GET", f"{patient}/$everything", None),
        ("everything", "type", "Patient"): ("GET", "/Patient/$everything", None),
        ("alliance-summary", "instance", "Patient"): ("GET", f"{patient}/$alliance-summary", None),
        ("lookup", "type", "CodeSystem"): ("GET", f"/CodeSystem/$lookup?system={system}&code={code}", None),
        ("validate-code", "type", "CodeSystem"): ("GET", f"/CodeSystem/$validate-code?url={system}&code={code}", None),
        ("validate-code", "instance", "CodeSystem"): ("GET", f"{cs}/$validate-code?code={code}", None),
        ("validate-code", "type", "ValueSet"): (
            "GET",
            f"/ValueSet/$validate-code?url={valueset}&system={system}&code={code}",
            None,
        ),
        ("validate-code", "instance", "ValueSet"): ("GET", f"{vs}/$validate-code?system={system}&code={code}", None),
        ("expand", "type", "ValueSet"): ("GET", f"/ValueSet/$expand?url={valueset}", None),
        ("expand", "instance", "ValueSet"): ("GET", f"{vs}/$expand", None),
        ("extract", "type", "QuestionnaireResponse"): ("POST", "/QuestionnaireResponse/$extract", _srs(ctx["patient"])),
        ("extract", "instance", "QuestionnaireResponse"): ("GET", f"{response}/$extract", None),
        ("export", "system", None): ("GET", "/$export", None),
        ("export", "type", "Patient"): ("GET", "/Patient/$export", None),
        ("export", "instance", "Group"): ("GET", f"/Group/{seeds['Group']}/$export", None),
        ("status", "type", "Subscription"): ("GET", "/Subscription/$status", None),
        ("status", "instance", "Subscription"): ("GET", f"/Subscription/{seeds['Subscription']}/$status", None),
        ("events", "instance", "Subscription"): ("GET", f"/Subscription/{seeds['Subscription']}/$events", None),
        ("evaluate-measure", "type", "Measure"): ("GET", f"/Measure/$evaluate-measure?{PERIOD}", None),
        # a Measure of the library's (an indicator): a Measure created by a client has nothing to count with
        ("evaluate-measure", "instance", "Measure"): (
            "GET",
            f"/Measure/srs-mean-1.0.0/$evaluate-measure?{PERIOD}",
            None,
        ),
    }
    request = requests.get((name, level, resource_type))
    if request is None:
        return None
    # Without a launch patient, Patient/$everything asks for one: the definition allows an error there.
    expected = {400} if (name, level) == ("everything", "type") else {202} if name == "export" else {200}
    return (*request, expected)


def test_every_system_interaction_answers(contract):
    c, failures = contract["client"], []
    patient = {"resourceType": "Patient", "name": [{"family": "Contract"}]}
    requests = {
        "transaction": lambda: c.post("", json=_bundle("transaction", patient), headers=FHIR_JSON),
        "batch": lambda: c.post("", json=_bundle("batch", patient), headers=FHIR_JSON),
        "history-system": lambda: c.get("/_history", params={"_count": "5"}),
    }
    for interaction in contract["rest"]["interaction"]:
        send = requests.get(interaction["code"])
        if send is None:
            failures.append(f"system: no request known for {interaction['code']}")
            continue
        _check(failures, f"system {interaction['code']}", send(), {200})
    assert not failures, "\n".join(failures)


def _bundle(kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": "urn:uuid:0b0a5c6e-4f3d-4b5e-8c1a-2d3e4f5a6b7c", **entry}],
    }


@pytest.mark.parametrize("resource_type", ["Parameters"])
def test_what_is_not_declared_is_refused_clearly(contract, resource_type):
    c = contract["client"]
    resource = minimal(resource_type)
    for response in (
        c.post(f"/{resource_type}", json=resource, headers=FHIR_JSON),
        c.put(f"/{resource_type}/nd-1", json={**resource, "id": "nd-1"}, headers=FHIR_JSON),
        c.put(f"/{resource_type}", params={"_id": "nd-2"}, json=resource, headers=FHIR_JSON),
    ):
        outcome = assert_outcome(response, 422, "not-supported")
        assert (
            resource_type in outcome["issue"][0]["diagnostics"] or "subscriptions" in outcome["issue"][0]["diagnostics"]
        )
    response = c.post("", json=_bundle("transaction", resource), headers=FHIR_JSON)
    assert response.status_code == 422, response.text[:300]
    assert c.get(f"/{resource_type}", params={"_count": "1"}).json().get("total", 0) == 0

"""JSON Patch (RFC 6902, RFC 6901 pointers) for the FHIR patch interaction (fhir_server/jsonpatch.py): the RFCs'
rules the hand-written engine got wrong, and every failure an OperationOutcome naming the operation and pointer."""

from __future__ import annotations

import copy

import orjson
import pytest

from fhir_server.errors import FhirError
from fhir_server.jsonpatch import apply_patch
from tests.api.fhir import assert_outcome, patient, post

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
RESOURCE = {
    "resourceType": "Patient",
    "id": "p",
    "active": True,
    "multipleBirthInteger": 1,
    "name": [{"family": "Rivera", "given": ["Ana", "María"]}],
}


def _failure(operations: list) -> FhirError:
    with pytest.raises(FhirError) as caught:
        apply_patch(RESOURCE, operations)
    return caught.value


def _diagnostics(error: FhirError) -> str:
    return " ".join(issue.diagnostics for issue in error.issues)


# -- through the API: the defects of the hand-written engine --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("/name/²", "²"),  # a digit to str.isdigit, not to int(): the old engine answered 500
        ("/name/00/family", "00"),  # leading zeros: not an array index (RFC 6901 §4)
        ("/identifier/01/value", "01"),
        ("/name/\u0661", "\u0661"),  # an Arabic-Indic digit one
    ],
)
def test_an_invalid_array_index_is_a_clear_422_naming_the_pointer(client, uid, path, segment):
    pid = post(client, "/Patient", patient(uid)).json()["id"]
    operations = [{"op": "replace", "path": path, "value": "X"}]
    answer = client.patch(f"/Patient/{pid}", content=orjson.dumps(operations), headers=JSON_PATCH)
    outcome = assert_outcome(answer, 422, "processing")
    assert f"'{segment}' is not an array index" in outcome["issue"][0]["diagnostics"]
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_only_tilde_0_and_tilde_1_are_escapes(client, uid):
    pid = post(client, "/Patient", patient(uid)).json()["id"]
    operations = [{"op": "add", "path": "/extension~2", "value": []}]
    answer = client.patch(f"/Patient/{pid}", content=orjson.dumps(operations), headers=JSON_PATCH)
    outcome = assert_outcome(answer, 400, "invalid")
    assert "'/extension~2' is not a JSON pointer" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("element", "stored", "tested"), [("active", True, 1), ("multipleBirthInteger", 1, True)])
def test_test_tells_booleans_from_numbers(client, uid, element, stored, tested):
    pid = post(client, "/Patient", patient(uid, **{element: stored})).json()["id"]
    operations = [
        {"op": "test", "path": f"/{element}", "value": tested},
        {"op": "replace", "path": "/gender", "value": "other"},
    ]
    answer = client.patch(f"/Patient/{pid}", content=orjson.dumps(operations), headers=JSON_PATCH)
    assert "test failed" in assert_outcome(answer, 422, "processing")["issue"][0]["diagnostics"]
    same = [{"op": "test", "path": f"/{element}", "value": stored}]
    assert client.patch(f"/Patient/{pid}", content=orjson.dumps(same), headers=JSON_PATCH).status_code == 200


# -- the engine: what still applies, and the message of each failure -------------------------------------------------


def test_operations_apply_in_order_and_leave_the_argument_unchanged():
    before = copy.deepcopy(RESOURCE)
    patched = apply_patch(
        RESOURCE,
        [
            {"op": "test", "path": "/name/0/given/1", "value": "María"},
            {"op": "add", "path": "/name/0/given/-", "value": "Luz"},
            {"op": "add", "path": "/name/0/given/0", "value": "Zoe"},
            {"op": "copy", "from": "/name/0", "path": "/name/1"},
            {"op": "move", "from": "/name/1/family", "path": "/name/1/text"},
            {"op": "remove", "path": "/name/0/given/1"},
            {"op": "replace", "path": "/active", "value": False},
            {"op": "add", "path": "/gender", "value": "female"},
            {"op": "test", "path": "/multipleBirthInteger", "value": 1.0},  # numbers compare by value
            {"op": "add", "path": "/a~1b~0c", "value": 1},
        ],
    )
    assert patched["name"] == [
        {"family": "Rivera", "given": ["Zoe", "María", "Luz"]},
        {"text": "Rivera", "given": ["Zoe", "Ana", "María", "Luz"]},
    ]
    assert patched["active"] is False and patched["gender"] == "female" and patched["a/b~c"] == 1
    assert before == RESOURCE


@pytest.mark.parametrize(
    ("operations", "status", "message"),
    [
        ({"op": "add"}, 400, "A JSON Patch document is an array of operations"),
        ([{"op": "bogus", "path": "/a"}], 400, "Patch operation 0: each operation needs an 'op'"),
        ([{"op": "add", "path": "/a"}], 400, "Patch operation 0: 'add' needs a 'value'"),
        ([{"op": "remove"}], 400, "Patch operation 0: the operation needs a 'path'"),
        ([{"op": "move", "path": "/a"}], 400, "Patch operation 0: the operation needs a 'from'"),
        ([{"op": "add", "path": "active", "value": 1}], 400, "'active' is not a JSON pointer"),
        ([{"op": "add", "path": 7, "value": 1}], 400, "'7' is not a JSON pointer"),
        ([{"op": "add", "path": "/a~", "value": 1}], 400, "'/a~' is not a JSON pointer"),
        ([{"op": "replace", "path": "", "value": {}}], 400, "the whole resource cannot be the target"),
        ([{"op": "move", "from": "", "path": "/a"}], 400, "the whole resource cannot be moved"),
        ([{"op": "replace", "path": "/name/-", "value": {}}], 400, "'replace' cannot be applied to '/name/-'"),
        ([{"op": "test", "path": "/active", "value": True}, {"op": "remove", "path": "/x"}], 422, "operation 1: '/x'"),
        ([{"op": "add", "path": "/contact/0", "value": {}}], 422, "'/contact' does not exist"),
        ([{"op": "remove", "path": "/name/1"}], 422, "'/name/1' is past the end of the array"),
        ([{"op": "add", "path": "/name/2", "value": {}}], 422, "'/name/2' is past the end of the array"),
        ([{"op": "add", "path": "/name/-1", "value": {}}], 422, "'-1' is not an array index"),
        ([{"op": "add", "path": "/name/00", "value": {}}], 422, "'00' is not an array index"),
        ([{"op": "add", "path": "/active/x", "value": 1}], 422, "its parent holds a value"),
        ([{"op": "add", "path": "/name/0/family/0", "value": 1}], 422, "its parent holds a value"),
        ([{"op": "copy", "from": "/name/9", "path": "/x"}], 422, "from '/name/9' is past the end of the array"),
        ([{"op": "move", "from": "/name", "path": "/name/0/x"}], 422, "cannot be moved into its own children"),
        ([{"op": "test", "path": "/name/0/given", "value": ["Ana"]}], 422, "test failed"),
        ([{"op": "test", "path": "/active", "value": "true"}], 422, "test failed"),
    ],
)
def test_each_failure_names_the_operation_and_pointer(operations, status, message):
    error = _failure(operations)
    assert error.status == status and message in _diagnostics(error)
    assert "Rivera" not in _diagnostics(error)  # never the library's message, which can quote the resource


def test_a_test_may_read_the_whole_resource():
    assert apply_patch(RESOURCE, [{"op": "test", "path": "", "value": RESOURCE}]) == RESOURCE
    assert _failure([{"op": "test", "path": "", "value": {}}]).status == 422

"""FHIR R4 §2.6.2 JSON representation and docs/security.md's JSON traps, at the parser (no server needed)."""

from __future__ import annotations

import pytest

from fhir_server import fhirjson
from fhir_server.errors import FhirError


def test_decimals_keep_their_spelling():
    value = fhirjson.parse(b'{"a": 1.50, "b": [0.10, 3], "c": 1e2}')
    assert fhirjson.dumps(value) == b'{"a":1.50,"b":[0.10,3],"c":1e2}'
    assert value["a"] == 1.5  # and are still numbers


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "a": 2}', "structure"),
        (b'{"a": {"b": 1, "b": 1}}', "structure"),
        (b'{"a": NaN}', "value"),
        (b'{"a": -Infinity}', "value"),
        (b'{"a": 1e400}', "value"),
        (b'{"a": ' + b"1" * 70 + b"}", "value"),
        (b'{"a": 1000000000000000000000}', "value"),
        (b'{"a": "\\udc00"}', "value"),
        (b'{"a": "\\u0000"}', "value"),
        (b'{"\\u0001": 1}', "value"),
        (b"[" * 100 + b"]" * 100, "structure"),
        (b"\xc3\x28", "structure"),
        (b'{"a": null}', "structure"),
        (b"", "structure"),
    ],
)
def test_traps(body, code):
    with pytest.raises(FhirError) as caught:
        fhirjson.parse(body)
    assert caught.value.status == 400 and caught.value.code == code


def test_nulls_inside_primitive_arrays_are_allowed():
    assert fhirjson.parse(b'{"given": ["a", null], "_given": [null, {"id": "x"}]}')["given"] == ["a", None]


def test_byte_order_mark_is_tolerated():
    assert fhirjson.parse("\ufeff{}".encode()) == {}

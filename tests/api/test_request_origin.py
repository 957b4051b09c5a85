"""``request_origin`` and the audit target (api/http.py, deps.py) spell what Starlette's ``request.base_url`` and
``request.url`` spell, which the token's audience check and the audit records used before, for any Host header
a client may send."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from fhir_server.api.http import request_origin, request_target

HOSTS = [
    b"example.org",
    b"example.org:8443",
    b"127.0.0.1:8000",
    b"[::1]:8080",
    b"EXAMPLE.org:80",
    b"bad host:port",  # invalid: Starlette falls back to the server address
    b"example.org:99999",
    None,  # no Host header
]


def _request(scheme: str, host: bytes | None, path: str = "/fhir/Patient", query: bytes = b"") -> Request:
    headers = [(b"host", host)] if host is not None else []
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "server": ("10.0.0.5", 8000),
            "path": path,
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "method": "GET",
        }
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("host", HOSTS)
def test_request_origin_is_the_base_url(scheme, host):
    assert request_origin(_request(scheme, host)) == str(_request(scheme, host).base_url).rstrip("/")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/fhir/Observation", b"subject=Patient/1&code=http://loinc.org|1234-5"),
        ("/fhir/Patient", b""),
        ("/fhir/Patient/a?b#c", b"name=%C3%A9lise"),  # a decoded ? and # inside the path stay escaped
        ("/fhir/Patient", "name=élise".encode()),
    ],
)
def test_the_audit_target_is_the_request_urls_path_and_query(path, query):
    url = _request("http", b"example.org", path, query).url
    expected = url.path + (f"?{url.query}" if url.query else "")
    assert request_target(_request("http", b"example.org", path, query).scope) == expected

"""Small helpers for API tests: send FHIR JSON, check OperationOutcomes."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def post(client: httpx.Client, url: str, resource: Any, **headers: str) -> httpx.Response:
    return client.post(url, content=orjson.dumps(resource), headers={**FHIR_JSON, **headers})


def put(client: httpx.Client, url: str, resource: Any, **headers: str) -> httpx.Response:
    return client.put(url, content=orjson.dumps(resource), headers={**FHIR_JSON, **headers})


def send_raw(client: httpx.Client, method: str, url: str, body: bytes, content_type: str = "application/fhir+json"):
    return client.request(method, url, content=body, headers={"Content-Type": content_type})


def assert_outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is an OperationOutcome with this HTTP status and issue code, and leaks no stack trace."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    codes = [issue["code"] for issue in outcome["issue"]]
    assert code in codes, codes
    assert "Traceback" not in response.text and 'File "' not in response.text
    return outcome


def patient(uid: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": uid}],
        "name": [{"family": f"Test{uid}"}],
        **extra,
    }

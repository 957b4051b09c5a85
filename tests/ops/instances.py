"""Two independent server instances on one PostgreSQL database (issue 24, point 1): the processes and the
vocabulary of tests/ops/test_instances.py.

Each instance is ``fhir-server serve`` on its own port with every background worker on, as two machines behind a
load balancer run it; the EHR is a third process (another instance of this server with its own database and
authorization server) behind the fault proxy that takes it down and up.  Submissions arrive through the rating
form's real HTTP POST, on one instance or the other, in app sessions as an EHR launch leaves them.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.smart.sessions import COOKIE_NAME
from tests.ehr.harness import EhrProcess, fhir_json
from tests.support.process import ServerProcess

SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
NAMES = ("relationship", "goals", "approach", "overall")
LOW = (85, 88, 80, 88)  # below the SRS cutoff, one item below 9: a total, item scores and two Flags
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Short delays so an outage and its recovery take seconds; the logic is the production one.
# Behind one load balancer both instances answer for one public address: tokens either issues name it (iss, aud).
PUBLIC_URL = "https://fhir.example.test"
INSTANCE_SETTINGS = {
    "FHIR_SERVER_PUBLIC_URL": PUBLIC_URL,
    "FHIR_SERVER_AUTH_REQUIRED": "true",
    "FHIR_SERVER_OUTBOX_WORKER": "true",
    "FHIR_SERVER_OUTBOX_POLL_SECONDS": "0.2",
    "FHIR_SERVER_OUTBOX_TIMEOUT_SECONDS": "2",
    "FHIR_SERVER_OUTBOX_BASE_DELAY_SECONDS": "0.2",
    "FHIR_SERVER_OUTBOX_MAX_DELAY_SECONDS": "1.0",
    "FHIR_SERVER_OUTBOX_MAX_ATTEMPTS": "200",
    "FHIR_SERVER_OUTBOX_LEASE_SECONDS": "10",
    "FHIR_SERVER_EXPORT_WORKER": "true",
    "FHIR_SERVER_SUBSCRIPTION_WORKER": "true",
    "FHIR_SERVER_SUBSCRIPTION_LOCAL_ENDPOINTS": "true",  # the tests' receiver listens on loopback
    "FHIR_SERVER_SUBSCRIPTION_POLL_SECONDS": "0.2",
    "FHIR_SERVER_MESSAGE_WORKER": "true",
    "FHIR_SERVER_TASK_EXPIRY_WORKER": "true",
    "FHIR_SERVER_LOG_LEVEL": "info",
}


def ehr_patients(ehr: EhrProcess, count: int) -> list[tuple[str, str]]:
    """``count`` patients, each with a finished encounter, made in the EHR in one transaction."""
    entries = []
    for i in range(count):
        patient = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            _create(patient, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": f"p{i}"}]})
        )
        encounter = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": patient},
        }
        entries.append(_create(f"urn:uuid:{uuid.uuid4()}", encounter))
    with ehr.client() as client:
        answer = client.post("/", **fhir_json({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
        assert answer.status_code == 200, answer.text[:2000]
    ids = [entry["response"]["location"].split("/")[1] for entry in answer.json()["entry"]]
    return list(zip(ids[0::2], ids[1::2], strict=True))


def _create(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def submit_form(instance: ServerProcess, session_id: str, csrf: str) -> None:
    """The rating form's POST, as the client's browser sends it."""
    fields = {f"answer.{name}": str(mark) for name, mark in zip(NAMES, LOW, strict=True)} | {"csrf_token": csrf}
    answer = httpx.post(
        f"{instance.root}/app/form",
        data=fields,
        headers={"Cookie": f"{COOKIE_NAME}={session_id}", "Origin": PUBLIC_URL},
        timeout=60,
    )
    assert answer.status_code == 303, (answer.status_code, answer.text[:500])


def count_in(ehr: EhrProcess, resource_type: str) -> int:
    with ehr.client() as client:
        answer = client.get(f"/{resource_type}", params={"_summary": "count"})
    assert answer.status_code == 200, answer.text
    return answer.json()["total"]


def wait_until(condition: Any, what: str, timeout: float = 120, step: float = 0.25) -> float:
    """Seconds until ``condition()`` held (a deadline for a hung test, not a timing assertion)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def client_assertion(client_id: str, key: RSAKey, token_url: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])


def backend_token(instance: ServerProcess, client_id: str, key: RSAKey, scope: str) -> str:
    """A Backend Services access token that ``instance`` itself issued (signed with its current key)."""
    token_url = f"{PUBLIC_URL}/auth/token"  # the assertion's audience: the public address
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(client_id, key, token_url),
    }
    answer = httpx.post(f"{instance.root}/auth/token", data=data, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def kid_of(token: str) -> str:
    """The key id in a JWT's header (read, not verified: which key signed it is the question)."""
    head = token.split(".")[0]
    return orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def fhir_client(instance: ServerProcess, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    return httpx.Client(base_url=instance.fhir_base, headers=headers, timeout=60)

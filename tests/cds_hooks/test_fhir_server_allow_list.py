"""The CDS service reads only from the FHIR bases registered for the calling CDS client (issue 15, finding 7: it
used to connect to any ``fhirServer`` a hook request named, and its errors showed internal ports).

Everything runs over real HTTP: the service is this server (the ``server`` fixture, SQLite and PostgreSQL), the
EHR's FHIR server is a second instance started as its own process, a small HTTP server in the test plays a
misbehaving EHR (redirects, paging links elsewhere, error pages), and a bare listening socket on another loopback
port plays the address an attacker wants reached: the kernel queues any connection to it, so the test can tell
afterwards whether one arrived."""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.store import cds_store
from tests.support.databases import sqlite_database
from tests.support.process import server_process
from tests.support.server import RunningServer, free_port

SERVICE = "fit-alliance-patient-view"
FLAG_SYSTEM = "http://fit-fhir.org/fhir/CodeSystem/fit-flags"


class Attacker:
    """A listening socket nobody should ever connect to."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def connections(self) -> int:
        """Connections that arrived since the last call (accepted and closed here)."""
        count = 0
        while select.select([self.sock], [], [], 0.2)[0]:
            connection, _ = self.sock.accept()
            connection.close()
            count += 1
        return count


class MisbehavingEhr:
    """/redirect/fhir answers 302 to the attacker, /escape/fhir pages on to the attacker, /broken/fhir fails with
    internal details in its body, /paged/fhir pages correctly within itself."""

    def __init__(self, attacker: Attacker) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                root = f"http://127.0.0.1:{self.server.server_address[1]}"
                if self.path.startswith("/redirect/"):
                    self._answer(302, b"", {"Location": f"{attacker.url}/fhir/Observation"})
                elif self.path.startswith("/escape/"):
                    self._bundle([{"relation": "next", "url": f"{attacker.url}/fhir/Observation?page=2"}])
                elif self.path.startswith("/broken/"):
                    self._answer(500, b"could not connect to 10.0.0.5:5432 (postgres)", {})
                elif "page=2" in self.path:
                    self._bundle([])
                else:
                    self._bundle([{"relation": "next", "url": f"{root}/paged/fhir/Flag?page=2"}])

            def _bundle(self, links: list[dict[str, str]]) -> None:
                body = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "link": links})
                self._answer(200, body, {"Content-Type": "application/fhir+json"})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    target = Attacker()
    yield target
    target.sock.close()


@pytest.fixture(scope="module")
def misbehaving(attacker: Attacker) -> Iterator[MisbehavingEhr]:
    ehr = MisbehavingEhr(attacker)
    yield ehr
    ehr.httpd.shutdown()


@pytest.fixture(scope="module")
def ehr_base() -> Iterator[str]:
    with sqlite_database() as url, server_process(url, FHIR_SERVER_AUTH_REQUIRED="false") as process:
        yield process.fhir_base


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "allow-list", "alg": "RS384"}, private=True)


@pytest.fixture(scope="module")
def clients(server: RunningServer, key: RSAKey, ehr_base: str, misbehaving: MisbehavingEhr) -> dict[str, str]:
    """Two CDS clients: "good" may name the real EHR; "odd" may name the misbehaving one and a closed port."""
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    run = uuid.uuid4().hex[:8]
    issuers = {"good": f"https://good-{run}.test/cds", "odd": f"https://odd-{run}.test/cds"}
    engine = server.app.state.engine
    cds_store.add_client(engine, issuers["good"], "good", None, jwks, [ehr_base])
    odd = [f"{misbehaving.root}/{name}/fhir" for name in ("redirect", "escape", "broken", "paged")]
    cds_store.add_client(engine, issuers["odd"], "odd", None, jwks, [*odd, f"http://127.0.0.1:{free_port()}/fhir"])
    return issuers


def call(server: RunningServer, key: RSAKey, issuer: str, fhir_server: str, patient: str = "p1") -> httpx.Response:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "ehr",
        "aud": f"{server.root}/cds-services/{SERVICE}",
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": patient},
        "fhirServer": fhir_server,
        "fhirAuthorization": {"access_token": "ehr-token", "token_type": "Bearer", "scope": "patient/*.read"},
    }
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{server.root}/cds-services/{SERVICE}", json=body, headers=headers, timeout=30)


def assert_reveals_nothing(answer: httpx.Response, *secrets: str) -> None:
    assert answer.json()["resourceType"] == "OperationOutcome"
    for secret in ("127.0.0.1", "169.254", "10.0.0.5", "5432", "localhost", "Error", "refused", *secrets):
        assert secret not in answer.text, (secret, answer.text)


def test_an_unregistered_fhir_server_is_refused_before_any_connection(
    server, key, clients, ehr_base, attacker, misbehaving
):
    ehr_port = ehr_base.split(":")[2].split("/")[0]
    attacker.connections()
    seen = len(misbehaving.requests)
    for requested in (
        f"{attacker.url}/fhir",
        attacker.url,
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5432",
        f"http://user@127.0.0.1:{ehr_port}/fhir",  # userinfo before the registered host
        f"{ehr_base}@127.0.0.1:{attacker.port}",  # the registered base as a prefix
        f"{ehr_base}.evil",
        f"{attacker.url}#@127.0.0.1:{ehr_port}/fhir",
        f"{attacker.url}/?x=@127.0.0.1:{ehr_port}/fhir",
        f"http://localhost:{ehr_port}/fhir",  # the same server, spelled differently: still not what was registered
        f"{misbehaving.root}/paged/fhir",  # registered, but for another CDS client
    ):
        answer = call(server, key, clients["good"], requested)
        assert answer.status_code == 403, (requested, answer.text)
        assert "not a FHIR server registered for this CDS client" in answer.text
        assert_reveals_nothing(answer, str(attacker.port), ehr_port)
    assert attacker.connections() == 0
    assert len(misbehaving.requests) == seen


def test_the_registered_fhir_server_is_read(server, key, clients, ehr_base):
    patient = f"allow-{uuid.uuid4().hex[:8]}"
    flag = {
        "resourceType": "Flag",
        "id": f"{patient}-flag",
        "status": "active",
        "code": {"coding": [{"system": FLAG_SYSTEM, "code": "srs-below-cutoff"}], "text": "Read from the EHR. Ask."},
        "subject": {"reference": f"Patient/{patient}"},
    }
    with httpx.Client(base_url=ehr_base, timeout=30) as ehr:
        assert ehr.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
        assert ehr.put(f"/Flag/{flag['id']}", json=flag).status_code == 201
    for spelling in (ehr_base, ehr_base + "/", ehr_base.replace("http://", "HTTP://")):
        answer = call(server, key, clients["good"], spelling, patient)
        assert answer.status_code == 200, (spelling, answer.text)
        assert "Read from the EHR" in [c["summary"] for c in answer.json()["cards"]]


def test_redirects_and_paging_links_never_leave_the_registered_base(server, key, clients, attacker, misbehaving):
    attacker.connections()
    for name in ("redirect", "escape"):
        answer = call(server, key, clients["odd"], f"{misbehaving.root}/{name}/fhir")
        assert answer.status_code == 412, (name, answer.text)
        assert "could not be read" in answer.text
        assert_reveals_nothing(answer, str(attacker.port))
    assert attacker.connections() == 0
    # a paging link within the registered base is followed
    answer = call(server, key, clients["odd"], f"{misbehaving.root}/paged/fhir")
    assert answer.status_code == 200, answer.text
    assert any(path.startswith("/paged/fhir/Flag?page=2") for path in misbehaving.requests)


def test_errors_never_reveal_addresses_or_the_peers_text(server, key, clients, misbehaving):
    registered = cds_store.get_client(server.app.state.engine, clients["odd"])["fhir_servers"]
    closed = registered[-1]  # nothing listens there
    for base in (closed, f"{misbehaving.root}/broken/fhir"):
        answer = call(server, key, clients["odd"], base)
        assert answer.status_code == 412, answer.text
        assert "The EHR's FHIR server could not be read" in answer.text
        assert_reveals_nothing(answer, base.split(":")[2].split("/")[0], "postgres", "500")


def test_a_patient_id_that_is_not_a_fhir_id_is_refused(server, key, clients, ehr_base):
    answer = call(server, key, clients["good"], ehr_base, patient="p1&_include=*")
    assert answer.status_code == 400

"""An EHR that is not ours, as a process: Medplum's FHIR store (``@medplum/fhir-router`` on its in-memory
repository, from the npm registry) behind a SMART authorization-server stand-in shaped like smart-launcher-v2
(``ehr.mjs`` beside this file).  ``ForeignEhr`` starts it on a free loopback port and drives its control API.

Two capability modes: ``full`` (transaction, conditional create and update, declared and done) and ``minimal``
(Epic-like: none of them, and really refused or ignored).  Its SMART side grants v1 scopes only and signs id_tokens
without a ``kid`` — the habits that trip apps written against one server.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import ROOT

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "ehr.mjs"
MODULES = HERE / "node_modules"
MISSING = "npm not found: the foreign-EHR tests skip; make test installs tests/foreign_ehr/node_modules with npm ci"


def require_node(package: str = "fhir-router") -> None:
    """Skip (with the reason) when Node, npm or this folder's node_modules (``@medplum/<package>``) is not there;
    under CI, where make test always installs them, a missing install fails instead."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(MISSING)
    if not (MODULES / "@medplum" / package).is_dir():
        if os.environ.get("CI"):  # make test installs it wherever npm is: CI must not skip silently
            pytest.fail("tests/foreign_ehr/node_modules is missing (make test runs npm ci there)", pytrace=False)
        pytest.skip(
            "tests/foreign_ehr/node_modules is not installed: the foreign-EHR tests skip; "
            "make test installs it with npm ci"
        )


def running(capabilities: str) -> Iterator[ForeignEhr]:
    """For a fixture: the foreign EHR in ``capabilities`` mode for the fixture's scope (skipped without Node)."""
    require_node()
    with ForeignEhr(capabilities) as ehr:
        yield ehr


class ForeignEhr:
    """``node tests/foreign_ehr/ehr.mjs`` on its own port; stderr goes to a file (a pipe nobody reads would block)."""

    def __init__(self, capabilities: str = "full", folder: Path | None = None, validate: bool = True) -> None:
        if capabilities not in ("full", "minimal"):
            raise ValueError("capabilities is full or minimal")
        self.capabilities = capabilities
        self._temp = None if folder else tempfile.TemporaryDirectory(prefix="foreign-ehr-")
        self.folder = folder or Path(self._temp.name)  # type: ignore[union-attr]
        self.log_file = self.folder / f"foreign-ehr-{capabilities}.log"
        self.validate = validate
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    # -- the process ---------------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> ForeignEhr:
        command = ["node", str(SCRIPT), "--port", "0", "--capabilities", self.capabilities]
        if not self.validate:
            command.append("--no-validate")
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=dict(os.environ))
        assert self.process.stdout is not None
        # The ready line ({"port": N, ...}) is the only thing the process ever prints on stdout.
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if self.process.poll() is not None or left <= 0:
                said = self.log_file.read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"the foreign EHR did not start: {said}")
            ready, _, _ = select.select([self.process.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        self.port = int(json.loads(line)["port"])
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    def __enter__(self) -> ForeignEhr:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it is ---------------------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fhir_base(self) -> str:
        """Also the ``iss`` of launches and of its id_tokens."""
        return f"{self.root}/fhir"

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.root}/auth/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.root}/auth/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.root}/auth/jwks"

    # -- the control API (test only) -----------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.root}/_control/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def register_client(
        self,
        client_id: str,
        *,
        scope: str,
        redirect_uris: list[str] | tuple[str, ...] = (),
        jwks_url: str | None = None,
    ) -> None:
        """A client of the EHR: an app with redirect URIs (public, or confidential with ``jwks_url``) or a Backend
        Services client (``jwks_url``).  ``scope`` is what it may be granted (v1 syntax, wildcards allowed)."""
        body: dict[str, Any] = {"client_id": client_id, "scope": scope, "redirect_uris": list(redirect_uris)}
        if jwks_url:
            body["jwks_url"] = jwks_url
        self._control("POST", "clients", body)

    def launch(self, patient: str, user: str, encounter: str | None = None, app_context: str | None = None) -> str:
        """An EHR launch (the ``launch`` parameter) for ``patient`` by Practitioner ``user``."""
        body: dict[str, Any] = {"patient": patient, "user": user}
        if encounter:
            body["encounter"] = encounter
        if app_context is not None:
            body["appContext"] = app_context
        return str(self._control("POST", "launch", body)["launch"])

    def standalone_patient(self, patient: str, user: str | None = None) -> None:
        """The patient (and user) a standalone launch with ``launch/patient`` gets."""
        self._control("POST", "standalone-patient", {"patient": patient, "user": user})

    def token(self, scope: str, patient: str | None = None) -> str:
        """An access token for the tests' own requests (v1 scopes; ``patient/`` ones need ``patient``)."""
        return str(self._control("POST", "token", {"scope": scope, "patient": patient})["access_token"])

    def client(self, scope: str = "system/*.read system/*.write", patient: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(scope, patient)}", "Accept": "application/fhir+json"}
        return httpx.Client(base_url=self.fhir_base, headers=headers, timeout=30)

    def seed(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Stores ``resource`` as given, its id kept (test data such as ``Patient/demo``); no scopes, no rules."""
        return dict(self._control("POST", "resources", resource))

    def outage(self, seconds: float) -> None:
        """For ``seconds`` every connection to /fhir and /auth closes unanswered (logged with ``outage``); the data
        stays (it is in this process's memory)."""
        self._control("POST", "outage", {"seconds": seconds})

    def lose_answer(self, method: str, path: str) -> None:
        """The next ``method`` request whose path starts with ``path`` is carried out, then its connection closes
        without an answer (logged with ``lost``)."""
        self._control("POST", "lose-answer", {"method": method, "path": path})

    def log(self) -> list[dict[str, Any]]:
        """Every request on /fhir and /auth in order: method, path (with query), selected headers, status; token
        requests also carry ``form`` (grant_type, scope, client_id) and batch/transaction posts ``bundle``."""
        return list(self._control("GET", "log")["requests"])

    def clear_log(self) -> None:
        self._control("DELETE", "log")

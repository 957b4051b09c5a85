"""An EHR and this app wired together as an administrator does it, for the launch tests (issue 7 points 1 and 4).

The EHR is a second instance of this server in its own process, with its own database and authorization server
(tests/ehr/harness.EhrProcess).  There, our app is a public SMART client (redirect to our /app/callback), our
server a Backend Services client (keys from our /auth/jwks) and a clinician a user who signs in.  Here, the EHR
is registered with ``fhir_server.ehr.registry`` as ``fhir-server ehr add`` does.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import httpx

from fhir_server.config import Settings
from fhir_server.ehr import registry
from tests.ehr.harness import EhrProcess
from tests.support.process import ROOT, environment
from tests.support.server import RunningServer

APP_CLIENT, BACKEND_CLIENT = "fit-app", "fit-write-back"
APP_SCOPE = (
    "openid fhirUser launch launch/patient online_access patient/Patient.rs patient/Encounter.rs "
    "patient/Questionnaire.rs "
    "patient/QuestionnaireResponse.cru "
    "patient/Observation.cru patient/Flag.cru patient/Provenance.cru"
)
# .crus: write-back searches for earlier copies in an EHR without conditional writes (fhir_server/ehr/tokens.py)
BACKEND_SCOPE = "system/QuestionnaireResponse.crus system/Observation.crus system/Flag.crus system/Provenance.crus"
CLINICIAN, PASSWORD = "therapist", "correct horse battery"
PICKER = "front-desk"  # a user the EHR lets choose the patient (standalone launch)


def launching_settings(database_url: str, **overrides: object) -> Settings:
    """Our server as the launch tests run it: authorization on, the outbox worker delivering with short delays."""
    values: dict = {
        "database_url": database_url,
        "auth_required": True,
        "outbox_worker": True,
        "outbox_poll_seconds": 0.1,
        "outbox_base_delay_seconds": 0.2,
        "outbox_max_delay_seconds": 1.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@dataclass
class Launchable:
    ehr: EhrProcess
    ours: RunningServer
    ehr_id: int


def wire(
    ehr: EhrProcess, ours: RunningServer, app_client: str = APP_CLIENT, backend_client: str = BACKEND_CLIENT
) -> Launchable:
    added = ehr.admin(
        "clients", "add", "--name", "FIT rating form", "--public", "--client-id", app_client,
        "--redirect-uri", f"{ours.root}/app/callback", "--scope", APP_SCOPE,
    )  # fmt: skip
    assert added.returncode == 0 or "exists" in added.stderr, added.stderr
    ehr.register_backend_client(backend_client, f"{ours.root}/auth/jwks", BACKEND_SCOPE)
    for username, extra in ((CLINICIAN, []), (PICKER, ["--may-pick-patient"])):
        user = subprocess.run(
            [sys.executable, "-m", "fhir_server", "users", "add", username, "--fhir-user", "Practitioner/therapist-1",
             "--password-stdin", *extra],
            input=PASSWORD + "\n", env=environment(FHIR_SERVER_DATABASE_URL=ehr.database_url, **ehr.env), cwd=ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert user.returncode == 0 or "exists" in user.stderr, user.stderr
    registration = registry.register(
        ours.app.state.engine,
        issuer=ehr.fhir_base,
        client_id=app_client,
        auth_method="none",
        scope=APP_SCOPE,
        name="Test EHR",
        backend_client_id=backend_client,
    )
    return Launchable(ehr, ours, registration.id)


def ehr_launch(
    world: Launchable,
    patient: str,
    encounter: str | None = None,
    fhir_context: list | None = None,
    app_context: str | None = None,
) -> str:
    """The EHR records a launch context (as its chart does when the clinician opens the app) → the launch id.
    ``app_context`` is the appContext of the CDS Hooks card link the clinician followed (a string, passed on as is
    in the token response)."""
    body: dict = {"patient": patient, "user": CLINICIAN, "need_patient_banner": True}
    if fhir_context:
        body["fhirContext"] = fhir_context
    if app_context is not None:
        body["appContext"] = app_context
    if encounter:
        body["encounter"] = encounter
    token = world.ehr.mint("system/*.cruds", world.ehr.root)
    answer = httpx.post(f"{world.ehr.root}/auth/launch", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["launch"]


def launch_url(world: Launchable, launch: str | None, **params: str) -> str:
    query = httpx.QueryParams({"iss": world.ehr.fhir_base, **({"launch": launch} if launch else {}), **params})
    return f"{world.ours.root}/app/launch?{query}"


def sign_in(page: object, username: str = CLINICIAN) -> None:
    """The clinician signs in at the EHR's authorization server (the page the launch redirected to)."""
    page.locator("#username").fill(username)  # type: ignore[attr-defined]
    page.locator("#password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.locator('button[value="login"]').click()  # type: ignore[attr-defined]

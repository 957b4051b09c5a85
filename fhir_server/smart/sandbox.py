"""The sandbox EHR (``FHIR_SERVER_SANDBOX=true``, which ``make serve`` sets): this server plays the EHR for a first
run.  It registers, once per origin and idempotently, exactly what an administrator registers for a real EHR —
the app as a SMART client of this server's authorization server, this server's FHIR base as the EHR the app
writes back to (with a Backend Services client signed by this server's own key) — plus demo clients (patients),
a little history for the clinician view, a demo clinician to sign in as, and a demo supervisor who runs the
supervision page's reports for the practice below.  A launch then goes through the same authorization server, token
exchange and write-back as with an external EHR.

Also a small practice with four months of history for the supervisors' reports (sandbox_practice.py), written
with the rest on the first request: about 1.2 s of scoring on SQLite, 2 s on PostgreSQL (measured on two cores),
short enough not to need a background thread.

Never enable the sandbox on a server with real patients: its demo sign-in is published in the README.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.auth import admin
from fhir_server.canonical import BASE
from fhir_server.ehr import registry
from fhir_server.engine.interactions import Interactions
from fhir_server.smart.sandbox_practice import create_practice
from fhir_server.store import oauth_store
from fhir_server.store.engine import Database

DEMO_USER, DEMO_PASSWORD = "demo", "sandbox-demo"
DEMO_CLINICIAN = "Practitioner/sandbox-therapist"
SUPERVISOR_USER, SUPERVISOR_PASSWORD = "supervisor", "sandbox-supervisor"
SUPERVISOR = ("sandbox-supervisor", "Robin", "Ellis")  # Practitioner id, given and family name
SUPERVISED = "Organization/sandbox-org"  # the practice's organisation: its clinic and both programs
APP_SCOPE = (
    "openid fhirUser launch launch/patient online_access patient/Patient.rs patient/QuestionnaireResponse.crus "
    "patient/Observation.crus patient/Flag.crus patient/Provenance.crus user/MeasureReport.rs"
)
BACKEND_SCOPE = "system/QuestionnaireResponse.crus system/Observation.crus system/Flag.crus system/Provenance.crus"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2"


@dataclass(frozen=True)
class DemoPatient:
    id: str
    name: str
    birth_date: str
    about: str


PATIENTS = (
    DemoPatient("sandbox-alex", "Alex Rivera", "1988-03-14", "adult, alliance dipping over the last sessions"),
    DemoPatient("sandbox-sam", "Sam Okafor", "2010-09-02", "adolescent (ORS cutoff 28), first session today"),
    DemoPatient("sandbox-jo", "Jo Lindqvist", "1975-12-20", "adult, no sessions yet"),
)
# Alex's earlier sessions (SRS marks in mm, ORS marks in mm): the clinician view has a trend to show
ALEX_HISTORY = (
    ("2026-10-04", (92, 90, 93, 94), (40, 45, 50, 42)),
    ("2026-10-11", (90, 88, 90, 91), (48, 50, 55, 50)),
    ("2026-10-18", (86, 80, 85, 88), (52, 55, 58, 54)),
    ("2026-10-25", (84, 72, 80, 83), (50, 60, 57, 55)),
)


def origin_key(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()[:10]


class Sandbox:
    def __init__(self, engine: Database, fhir: Interactions) -> None:
        self.engine = engine
        self.fhir = fhir
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def app_client_id(self, origin: str) -> str:
        return f"fit-sandbox-app-{origin_key(origin)}"

    def ensure(self, origin: str) -> None:
        """Registrations for this origin (a redirect URI is exact, so each origin gets its own app client)."""
        if origin in self._ready:
            return
        with self._lock:
            if origin in self._ready:
                return
            self._register_clients(origin)
            self._register_ehr(origin)
            self._demo_user()
            self._demo_records()
            create_practice(self.fhir, datetime.now(UTC).date())  # once per database: the marker says so
            self._supervisor()
            self._ready.add(origin)

    def _register_clients(self, origin: str) -> None:
        key = origin_key(origin)
        existing = oauth_store.get_client(self.engine, self.app_client_id(origin))
        if existing is not None and existing["scope"] != APP_SCOPE:
            # a sandbox database from before the supervision page: its app client may now ask for reports too
            oauth_store.set_client_scope(self.engine, self.app_client_id(origin), APP_SCOPE)
        elif existing is None:
            _tolerate_race(
                lambda: admin.add_client(
                    self.engine,
                    name="FIT rating form (sandbox)",
                    kind="public",
                    redirect_uris=[f"{origin}/app/callback"],
                    scope=APP_SCOPE,
                    client_id=self.app_client_id(origin),
                ),
                lambda: oauth_store.get_client(self.engine, self.app_client_id(origin)) is not None,
            )
        if oauth_store.get_client(self.engine, f"fit-sandbox-backend-{key}") is None:
            _tolerate_race(
                lambda: admin.add_client(
                    self.engine,
                    name="FIT write-back (sandbox)",
                    kind="jwks_url",
                    redirect_uris=[],
                    scope=BACKEND_SCOPE,
                    jwks_url=f"{origin}/auth/jwks",
                    client_id=f"fit-sandbox-backend-{key}",
                ),
                lambda: oauth_store.get_client(self.engine, f"fit-sandbox-backend-{key}") is not None,
            )

    def _register_ehr(self, origin: str) -> None:
        if registry.by_issuer(self.engine, f"{origin}/fhir") is None:
            _tolerate_race(
                lambda: registry.register(
                    self.engine,
                    issuer=f"{origin}/fhir",
                    client_id=self.app_client_id(origin),
                    auth_method="none",
                    scope=APP_SCOPE,
                    name="Sandbox EHR (this server)",
                    backend_client_id=f"fit-sandbox-backend-{origin_key(origin)}",
                ),
                lambda: registry.by_issuer(self.engine, f"{origin}/fhir") is not None,
            )

    def _demo_user(self) -> None:
        if oauth_store.get_user_by_name(self.engine, DEMO_USER) is None:
            _tolerate_race(
                lambda: admin.add_user(
                    self.engine,
                    DEMO_USER,
                    DEMO_PASSWORD,
                    DEMO_CLINICIAN,
                    may_pick_patient=True,
                    display_name="Demo therapist",
                ),
                lambda: oauth_store.get_user_by_name(self.engine, DEMO_USER) is not None,
            )

    def _supervisor(self) -> None:
        """The demo supervisor: a user who supervises the practice's organisation, and their Practitioner."""
        practitioner_id, given, family = SUPERVISOR
        if oauth_store.get_user_by_name(self.engine, SUPERVISOR_USER) is None:
            _tolerate_race(
                lambda: admin.add_user(
                    self.engine,
                    SUPERVISOR_USER,
                    SUPERVISOR_PASSWORD,
                    f"Practitioner/{practitioner_id}",
                    may_pick_patient=False,
                    display_name="Demo supervisor",
                    supervises=[SUPERVISED],
                ),
                lambda: oauth_store.get_user_by_name(self.engine, SUPERVISOR_USER) is not None,
            )

        def work(session: Any) -> None:
            if session.current("Practitioner", practitioner_id) is None:
                name = {"text": f"{given} {family}", "given": [given], "family": family}
                resource = {"resourceType": "Practitioner", "id": practitioner_id, "active": True, "name": [name]}
                self.fhir.create(session, "Practitioner", resource, resource_id=practitioner_id)

        self.fhir.repo.write(work)

    def _demo_records(self) -> None:
        def work(session: Any) -> None:
            if session.current("Patient", PATIENTS[0].id) is not None:
                return
            for patient in PATIENTS:
                resource = {
                    "resourceType": "Patient",
                    "id": patient.id,
                    "name": [{"text": patient.name}],
                    "birthDate": patient.birth_date,
                }
                # a create: a concurrent first request's twin fails on the key and is retried, to return above
                self.fhir.create(session, "Patient", resource, resource_id=patient.id)
            for day, srs, ors in ALEX_HISTORY:
                for canonical, marks, names, hour in (
                    (ORS, ors, ("individually", "interpersonally", "socially", "overall"), "09"),
                    (SRS, srs, ("relationship", "goals", "approach", "overall"), "10"),
                ):
                    items = [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(names, marks, strict=True)]
                    if canonical == ORS:
                        respondent = {"system": "http://fit-fhir.org/fhir/CodeSystem/fit-respondent", "code": "self"}
                        items.insert(0, {"linkId": "respondent", "answer": [{"valueCoding": respondent}]})
                    response = {
                        "resourceType": "QuestionnaireResponse",
                        # an identifier, like every form submission: write-back (here, to this same server)
                        # finds the response by it instead of storing a second copy
                        "identifier": {"system": f"{BASE}/sandbox-history", "value": f"alex-{day}-{hour}"},
                        "questionnaire": canonical,
                        "status": "completed",
                        "subject": {"reference": "Patient/sandbox-alex"},
                        "author": {"reference": "Patient/sandbox-alex"},
                        "authored": f"{day}T{hour}:50:00Z",
                        "item": items,
                    }
                    self.fhir.create(session, "QuestionnaireResponse", response)

        self.fhir.repo.write(work)


def _tolerate_race(register: Any, exists: Any) -> None:
    """Two first requests at once: the second registration may find the first one's row, which is what it wanted;
    any other refusal is a real error."""
    try:
        register()
    except (admin.AdminError, registry.RegistrationError):
        if not exists():
            raise

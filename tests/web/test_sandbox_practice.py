"""The sandbox's practice (issue 20, point 6): after the first visit to /sandbox the store holds an organisation,
its clinic and two programs nested by ``partOf``, four clinicians each with a PractitionerRole in a program, the
three demo clients as before and twenty more with months of scored sessions attributed to their clinician and
program, acknowledged alliance Flags and early dropouts; and no later visit, other origin, restarted process or
concurrent worker creates any of it twice.

Each server here has a database of its own (not the session's shared one), so counts are exact."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.smart.sandbox import ALEX_HISTORY, PATIENTS, SUPERVISOR, Sandbox
from fhir_server.smart.sandbox_practice import CLIENTS, CLINICIANS, PROGRAMS
from tests.support.databases import postgres_admin_url, postgres_database, sqlite_database
from tests.support.server import RunningServer, ServerThread
from tests.support.tokens import client_for, mint

EXT = "http://fit-fhir.org/fhir/StructureDefinition/"
CLINICIAN, PROGRAM, ACKNOWLEDGED = f"{EXT}session-clinician", f"{EXT}session-program", f"{EXT}flag-acknowledgement"
TYPES = ("Organization", "Practitioner", "PractitionerRole", "Patient", "Encounter", "QuestionnaireResponse")
SCORED = ("Observation", "Flag", "Provenance")


@contextmanager
def fresh_server(backend: str) -> Iterator[RunningServer]:
    databases = sqlite_database() if backend == "sqlite" else postgres_database(postgres_admin_url() or "")
    with databases as url:
        settings = Settings(database_url=url, auth_required=True, sandbox=True, _env_file=None)
        with ServerThread(settings, backend) as running:
            yield running


@pytest.fixture(scope="module")
def practice(backend: str) -> Iterator[RunningServer]:
    with fresh_server(backend) as running:
        assert httpx.get(f"{running.root}/sandbox", timeout=60).status_code == 200  # the first run's first visit
        yield running


@pytest.fixture(scope="module")
def fhir(practice: RunningServer) -> Iterator[httpx.Client]:
    with client_for(practice, mint(practice, "system/*.rs")) as c:
        yield c


def everything(fhir: httpx.Client, resource_type: str, **params: str) -> list[dict]:
    """Every match (the practice's few hundred fit one page of 1000)."""
    answer = fhir.get(f"/{resource_type}", params={"_count": "1000", **params})
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert not any(link["relation"] == "next" for link in bundle.get("link", [])), "more than one page"
    return [entry["resource"] for entry in bundle.get("entry", [])]


def extension(resource: dict, url: str) -> dict | None:
    return next((e for e in resource.get("extension", []) if e["url"] == url), None)


def reference(resource: dict, url: str) -> str | None:
    found = extension(resource, url)
    return found["valueReference"]["reference"] if found else None


def counts(fhir: httpx.Client) -> dict[str, int]:
    return {t: fhir.get(f"/{t}", params={"_summary": "count"}).json()["total"] for t in (*TYPES, *SCORED)}


def created_on(fhir: httpx.Client) -> str:
    """The day the practice was made (its marker, written last): the data is the same for the same day."""
    return fhir.get("/Organization/sandbox-org").json()["meta"]["lastUpdated"][:10]


def test_organisation_clinic_and_programs_nest_by_part_of(fhir):
    orgs = {o["id"]: o for o in everything(fhir, "Organization")}
    assert set(orgs) == {"sandbox-org", "sandbox-clinic", *PROGRAMS}
    assert "partOf" not in orgs["sandbox-org"]
    assert orgs["sandbox-clinic"]["partOf"]["reference"] == "Organization/sandbox-org"
    assert {orgs[p]["name"] for p in PROGRAMS} == {"Adult counselling", "Youth and family"}
    for program in PROGRAMS:
        assert orgs[program]["partOf"]["reference"] == "Organization/sandbox-clinic"


def test_four_clinicians_two_per_program(fhir):
    practitioners = {p["id"]: p for p in everything(fhir, "Practitioner")}
    assert set(practitioners) == {c.id for c in CLINICIANS} | {SUPERVISOR[0]} and "sandbox-therapist" in practitioners
    assert all(p["name"][0]["text"] for p in practitioners.values())
    roles = everything(fhir, "PractitionerRole")
    assert len(roles) == 4
    linked = {r["practitioner"]["reference"]: r["organization"]["reference"] for r in roles}
    assert set(linked) == {f"Practitioner/{c.id}" for c in CLINICIANS}
    assert Counter(linked.values()) == {f"Organization/{p}": 2 for p in PROGRAMS}


def test_the_demo_clients_are_as_before_and_the_practice_has_twenty_more(fhir):
    patients = {p["id"]: p for p in everything(fhir, "Patient")}
    for demo in PATIENTS:
        assert patients[demo.id]["name"] == [{"text": demo.name}]
        assert patients[demo.id]["birthDate"] == demo.birth_date
    alex = everything(fhir, "QuestionnaireResponse", subject="Patient/sandbox-alex")
    assert len(alex) == 2 * len(ALEX_HISTORY)
    for demo in ("sandbox-sam", "sandbox-jo"):
        assert everything(fhir, "QuestionnaireResponse", subject=f"Patient/{demo}") == []
    practice = set(patients) - {p.id for p in PATIENTS}
    assert practice == {c.id for c in CLIENTS} and len(practice) == 20
    encounters = everything(fhir, "Encounter")
    assert {e["subject"]["reference"] for e in encounters} == {f"Patient/{c}" for c in practice}
    for encounter in encounters:  # every session in the past, within about four months
        started = datetime.fromisoformat(encounter["period"]["start"])
        assert timedelta(0) < datetime.now(UTC) - started < timedelta(days=125)
        assert encounter["status"] == "finished" and encounter["class"]["code"] == "AMB"
        born = patients[encounter["subject"]["reference"][8:]]["birthDate"]
        age = (started.date() - datetime.fromisoformat(born).date()).days // 365.25
        program = encounter["serviceProvider"]["reference"]
        assert age >= 18 if program == "Organization/sandbox-program-adults" else 13 <= age <= 17


def test_scored_results_name_the_sessions_clinician_and_program(fhir):
    """Every Observation and Flag of a practice session carries both extensions, and each clinician and program
    has results under its name, searchable by the session-* parameters."""
    programs = {f"Practitioner/{c.id}": f"Organization/{c.program}" for c in CLINICIANS}
    encounters = {f"Encounter/{e['id']}": e for e in everything(fhir, "Encounter")}
    practice_results = [
        r
        for kind in ("Observation", "Flag")
        for r in everything(fhir, kind)
        if r["subject"]["reference"] != "Patient/sandbox-alex"
    ]
    assert len(practice_results) > 2 * len(encounters)
    for result in practice_results:
        encounter = encounters[result["encounter"]["reference"]]
        clinician = encounter["participant"][0]["individual"]["reference"]
        assert reference(result, CLINICIAN) == clinician
        assert reference(result, PROGRAM) == programs[clinician] == encounter["serviceProvider"]["reference"]
    kinds = Counter(o["code"]["coding"][0]["code"] for o in practice_results if o["resourceType"] == "Observation")
    assert kinds["ors-total"] == kinds["srs-total"] == len(encounters) and kinds["wai-sr-total"] >= 8
    for clinician, program in programs.items():
        by_clinician = everything(fhir, "Observation", **{"session-clinician": clinician})
        assert by_clinician and {reference(o, PROGRAM) for o in by_clinician} == {program}
    for program in PROGRAMS:
        assert everything(fhir, "Observation", **{"session-program": f"Organization/{program}"})


def test_some_alliance_concerns_were_acknowledged_between_two_sessions_and_the_next_srs_is_better(fhir):
    acknowledged = [f for f in everything(fhir, "Flag", status="inactive") if extension(f, ACKNOWLEDGED)]
    sessions = defaultdict(list)  # (client, the low rating's instant) → the concerns it raised, acknowledged
    for flag in acknowledged:
        sessions[flag["subject"]["reference"], flag["period"]["start"]].append(flag["code"]["coding"][0]["code"])
        parts = {e["url"]: e for e in extension(flag, ACKNOWLEDGED)["extension"]}
        assert parts["by"]["valueReference"]["reference"] == reference(flag, CLINICIAN)
        assert parts["at"]["valueDateTime"] == flag["period"]["end"]
    assert len(sessions) >= 4 and all("srs-below-cutoff" in codes for codes in sessions.values())
    assert all(code.startswith("srs-") for codes in sessions.values() for code in codes)
    for key in sessions:
        client, raised = key
        srs = sorted(
            everything(fhir, "Observation", subject=client, code="srs-total"), key=lambda o: o["effectiveDateTime"]
        )
        low = next(i for i, o in enumerate(srs) if o["effectiveDateTime"] == raised)
        at = next(f["period"]["end"] for f in acknowledged if (f["subject"]["reference"], f["period"]["start"]) == key)
        assert raised < at < srs[low + 1]["effectiveDateTime"]  # acknowledged before the next session
        assert srs[low]["valueQuantity"]["value"] < 36 <= srs[low + 1]["valueQuantity"]["value"]
    open_concerns = everything(fhir, "Flag", status="active", code="srs-below-cutoff")
    assert any(f["subject"]["reference"] != "Patient/sandbox-alex" for f in open_concerns)


def test_early_dropouts_and_repeated_40s(fhir):
    sessions = defaultdict(list)
    for encounter in everything(fhir, "Encounter"):
        sessions[encounter["subject"]["reference"]].append(datetime.fromisoformat(encounter["period"]["start"]))
    month_ago = datetime.now(UTC) - timedelta(days=30)
    dropouts = [p for p, starts in sessions.items() if len(starts) <= 2 and max(starts) < month_ago]
    assert len(dropouts) >= 4
    recent = [p for p, starts in sessions.items() if max(starts) > datetime.now(UTC) - timedelta(days=7)]
    assert len(recent) >= 12 and all(len(sessions[p]) >= 8 for p in recent)
    ceilings = everything(fhir, "Flag", code="srs-ceiling")
    assert len({f["subject"]["reference"] for f in ceilings}) >= 2
    deteriorations = everything(fhir, "Flag", code="ors-deterioration")
    assert deteriorations and len({f["subject"]["reference"] for f in deteriorations}) < len(CLIENTS) // 2


def test_ensuring_again_from_another_origin_or_another_process_creates_nothing_twice(practice, fhir):
    before = counts(fhir)
    host = f"localhost:{practice.root.rsplit(':', 1)[1]}"
    assert httpx.get(f"{practice.root}/sandbox", timeout=60).status_code == 200  # the same origin again
    assert httpx.get(f"{practice.root}/sandbox", headers={"Host": host}, timeout=60).status_code == 200
    state = practice.app.state
    Sandbox(state.engine, state.fhir).ensure(practice.root)  # a restarted server, or another worker process
    assert counts(fhir) == before
    clients = state.sandbox.app_client_id(practice.root), state.sandbox.app_client_id(f"http://{host}")
    assert clients[0] != clients[1]  # the second origin did go through ensure (its own app client)
    for resource_type in ("Organization", "PractitionerRole", "Patient", "Encounter"):
        assert {r["meta"]["versionId"] for r in everything(fhir, resource_type)} == {"1"}, resource_type


@pytest.fixture(scope="module")
def raced(backend: str) -> Iterator[RunningServer]:
    with fresh_server(backend) as running:
        yield running


def test_two_workers_at_once_create_one_practice(raced, practice, fhir):
    """Two worker processes of one server, each with its own Sandbox, on their first request at the same moment:
    one practice.  (On PostgreSQL the two really write at once; on SQLite writers take turns.)"""
    state = raced.app.state
    workers = [Sandbox(state.engine, state.fhir) for _ in range(2)]
    start, failures = threading.Barrier(2), []

    def first_request(sandbox: Sandbox) -> None:
        start.wait()
        try:
            sandbox.ensure(raced.root)
        except Exception as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=first_request, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == [] and not any(t.is_alive() for t in threads)
    with client_for(raced, mint(raced, "system/*.rs")) as other:
        assert len(everything(other, "Patient")) == len(PATIENTS) + len(CLIENTS)
        if created_on(other) == created_on(fhir):  # the same day's practice as the server made by one visit
            assert counts(other) == counts(fhir)
        for resource_type in ("Organization", "PractitionerRole", "Patient", "Encounter"):
            assert {r["meta"]["versionId"] for r in everything(other, resource_type)} == {"1"}, resource_type


def test_the_sandbox_page_mentions_the_practice(practice):
    page = " ".join(httpx.get(f"{practice.root}/sandbox", timeout=60).text.split())
    assert "a small practice for the supervision page: 2 programs, 4 clinicians and 20 more clients" in page

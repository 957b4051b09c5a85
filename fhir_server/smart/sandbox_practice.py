"""The sandbox's practice (issue 20): an organisation, its clinic, two programs, four clinicians and twenty clients
with about four months of weekly sessions, so the supervisors' reports have something to show on a first run.

Everything goes through the FHIR engine as a real EHR's writes would: each session is an Encounter (the clinician as
its primary performer, the program as its service provider) and the ORS, SRS and sometimes WAI-SR answered in it,
which scoring turns into Observations and Flags stamped with the session's clinician and program
(scoring/attribution.py).  The patterns a supervisor looks for are built in: early dropouts, alliance ruptures
acknowledged before the next session and repaired, outcomes improving for most and deteriorating for a few, and
clients who rate 40/40 every time.

Dates are relative to the day the practice is created, and the marks come from a ``random.Random`` seeded with that
day and the client, so the data always covers "the last four months" and is the same for a given day.

Creation is idempotent and safe from several worker processes at once: the structure, and each client with all of
their sessions, is one transaction that first checks whether it is already there (a concurrent twin that wins the
race makes the loser's transaction retry, which then finds it).  ``Organization/sandbox-org`` is written last and
marks the whole practice as present: a server restarted halfway through fills in what is missing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_server.canonical import BASE
from fhir_server.clinician.view import FlagNotOpen, acknowledge_in
from fhir_server.engine.interactions import Interactions
from fhir_server.scoring.resources import derived_id
from fhir_server.store.repository import WriteSession

Respond = Callable[[str, datetime, list[dict[str, Any]]], str]  # (questionnaire, authored, items) → response id

MARKER = ("Organization", "sandbox-org")
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
SRS = "http://fit-fhir.org/fhir/Questionnaire/srs|1.0.2"
ORS = "http://fit-fhir.org/fhir/Questionnaire/ors|1.0.2"
WAI_SR = "http://fit-fhir.org/fhir/Questionnaire/wai-sr|1.0.2"
SRS_LINES = ("relationship", "goals", "approach", "overall")
ORS_LINES = ("individually", "interpersonally", "socially", "overall")
SELF = {"system": f"{BASE}/CodeSystem/fit-respondent", "code": "self"}
WAI_FREQUENCY = f"{BASE}/CodeSystem/wai-frequency"
WAI_DISPLAY = ("Seldom", "Sometimes", "Fairly often", "Very often", "Always")
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SRS_CUTOFF = 36  # the SRS's alliance cutoff (questionnaires/srs/scoring.json): a rupture is rated below it
DROPOUT_DAYS = 30  # a client last seen more than this long ago, after a session or two, has dropped out

ORGANIZATIONS = (  # (id, name, type code, partOf): the organisation, its clinic, the clinic's two programs
    ("sandbox-clinic", "Riverside Clinic", "prov", "sandbox-org"),
    ("sandbox-program-adults", "Adult counselling", "dept", "sandbox-clinic"),
    ("sandbox-program-youth", "Youth and family", "dept", "sandbox-clinic"),
)
ORGANISATION_NAME = "Sandbox Counselling Service"
PROGRAMS = tuple(org_id for org_id, _, kind, _ in ORGANIZATIONS if kind == "dept")


@dataclass(frozen=True)
class Clinician:
    id: str  # Practitioner id; its PractitionerRole is sandbox-role-<id without "sandbox-">
    given: str
    family: str
    program: str  # Organization id

    @property
    def role(self) -> str:
        return f"sandbox-role-{self.id.removeprefix('sandbox-')}"


CLINICIANS = (
    Clinician("sandbox-therapist", "Demo", "Therapist", "sandbox-program-adults"),  # the demo sign-in's clinician
    Clinician("sandbox-priya", "Priya", "Natarajan", "sandbox-program-adults"),
    Clinician("sandbox-tomas", "Tomas", "Berg", "sandbox-program-youth"),
    Clinician("sandbox-hannah", "Hannah", "Mwangi", "sandbox-program-youth"),
)


@dataclass(frozen=True)
class Client:
    given: str
    family: str
    age: int  # whole years throughout the four months (13-17 in the youth program: the SRS and ORS apply)
    clinician: int  # index into CLINICIANS
    course: str  # improving | deteriorating | dropout | repaired | rupture | ceiling
    wai: bool = False  # a WAI-SR every third or fourth session (adults only: the WAI-SR is made for adults)

    @property
    def id(self) -> str:
        return f"sandbox-{self.given.lower()}-{self.family.lower()}"


CLIENTS = (
    Client("Maya", "Hoffmann", 34, 0, "improving", wai=True),
    Client("Daniel", "Osei", 45, 0, "repaired", wai=True),
    Client("Lena", "Kowalski", 29, 0, "dropout"),
    Client("Omar", "Haddad", 52, 0, "ceiling"),
    Client("Grace", "Kim", 38, 0, "deteriorating", wai=True),
    Client("Ben", "Carter", 41, 1, "improving", wai=True),
    Client("Sofia", "Marin", 27, 1, "repaired"),
    Client("Ravi", "Shah", 60, 1, "dropout"),
    Client("Elena", "Petrova", 33, 1, "improving", wai=True),
    Client("Chris", "Walsh", 48, 1, "rupture"),
    Client("Noah", "Fischer", 15, 2, "improving"),
    Client("Aisha", "Bello", 16, 2, "repaired"),
    Client("Liam", "Doyle", 14, 2, "dropout"),
    Client("Zoe", "Martin", 16, 2, "ceiling"),
    Client("Ethan", "Nakamura", 15, 2, "deteriorating"),
    Client("Mila", "Jovanovic", 14, 3, "improving"),
    Client("Lucas", "Silva", 16, 3, "repaired"),
    Client("Ella", "Novak", 15, 3, "dropout"),
    Client("Finn", "Larsen", 17, 3, "improving"),
    Client("Isla", "Brennan", 14, 3, "rupture"),
)


@dataclass(frozen=True)
class Visit:
    start: datetime
    ors: tuple[int, ...]  # marks in mm, one per line
    srs: tuple[int, ...]
    wai: tuple[int, ...] | None  # WAI-SR answer codes 1-5, or None when not given this session
    acknowledged: datetime | None  # when the clinician acknowledged this session's low SRS, if they did


def create_practice(fhir: Interactions, today: date) -> bool:
    """Create what is missing of the practice; False when the marker says it is all there already."""
    if fhir.repo.read(*MARKER) is not None:
        return False
    fhir.repo.write(lambda session: _structure(fhir, session))
    for client in CLIENTS:
        fhir.repo.write(lambda session, client=client: _client(fhir, session, client, today))
    fhir.repo.write(lambda session: _put_new(fhir, session, _organization("sandbox-org", ORGANISATION_NAME, "prov")))
    return True


def _put_new(fhir: Interactions, session: WriteSession, resource: dict[str, Any]) -> bool:
    """Write a resource of a fixed id unless it exists: a second run, or another worker's, leaves it alone.  A create,
    not an update: when a concurrent worker creates it after the check, the primary key refuses this one and the
    whole transaction is retried (Repository.write), to find it there; an update would add a second version."""
    if session.current(resource["resourceType"], resource["id"]) is not None:
        return False
    fhir.create(session, resource["resourceType"], resource, resource_id=resource["id"])
    return True


def _organization(org_id: str, name: str, kind: str, part_of: str | None = None) -> dict[str, Any]:
    org: dict[str, Any] = {
        "resourceType": "Organization",
        "id": org_id,
        "active": True,
        "type": [{"coding": [{"system": ORG_TYPE, "code": kind}]}],
        "name": name,
    }
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    return org


def _structure(fhir: Interactions, session: WriteSession) -> None:
    """The clinic, the programs, the clinicians and their roles (the organisation itself comes last: the marker)."""
    for org_id, name, kind, part_of in ORGANIZATIONS:
        _put_new(fhir, session, _organization(org_id, name, kind, part_of))
    for clinician in CLINICIANS:
        name = {"text": f"{clinician.given} {clinician.family}", "given": [clinician.given], "family": clinician.family}
        _put_new(fhir, session, {"resourceType": "Practitioner", "id": clinician.id, "active": True, "name": [name]})
        role = {
            "resourceType": "PractitionerRole",
            "id": clinician.role,
            "active": True,
            "practitioner": {"reference": f"Practitioner/{clinician.id}"},
            "organization": {"reference": f"Organization/{clinician.program}"},
            "code": [{"text": "Therapist"}],
        }
        _put_new(fhir, session, role)


def _client(fhir: Interactions, session: WriteSession, client: Client, today: date) -> None:
    """The client and every session of theirs, in time order (scoring reads the sessions before each one)."""
    rng = random.Random(f"{today.isoformat()}/{client.id}")
    # born long enough before the first session that the age is the same throughout the four months
    born = today.replace(year=today.year - client.age, day=min(today.day, 28))  # (no 29 February in most years)
    born -= timedelta(days=rng.randint(130, 330))
    name = {"text": f"{client.given} {client.family}", "given": [client.given], "family": client.family}
    patient = {"resourceType": "Patient", "id": client.id, "name": [name], "birthDate": born.isoformat()}
    if not _put_new(fhir, session, patient):
        return
    clinician = CLINICIANS[client.clinician]
    for number, visit in enumerate(_visits(client, today, rng), start=1):
        encounter = _encounter(client, clinician, number, visit.start)
        _put_new(fhir, session, encounter)
        respond = _responder(fhir, session, encounter)
        respond(ORS, visit.start + timedelta(minutes=4), _line_items(ORS_LINES, visit.ors, respondent=True))
        srs_id = respond(SRS, visit.start + timedelta(minutes=48), _line_items(SRS_LINES, visit.srs))
        if visit.wai is not None:
            respond(WAI_SR, visit.start + timedelta(minutes=50), _wai_items(visit.wai))
        if visit.acknowledged is not None:  # the clinician took up the concerns before the next session
            _acknowledge_all(fhir, session, client.id, srs_id, clinician, visit.acknowledged)


def _acknowledge_all(
    fhir: Interactions, session: WriteSession, client_id: str, srs_id: str, clinician: Clinician, at: datetime
) -> None:
    """Every concern the low SRS raised (below the cutoff, and a drop, a decline, an item ... where it raised them),
    each acknowledged as the clinician view lists them: the reports count a concern acknowledged before the next
    rating, whichever rule raised it."""
    rules = fhir.scoring.rules_for({"questionnaire": SRS})
    for rule in rules.flags if rules else ():
        try:  # the Flag's id is derived from the response's (scoring/resources.py)
            acknowledge_in(
                fhir, session, client_id, derived_id(srs_id, rule.id), f"Practitioner/{clinician.id}", _instant(at)
            )
        except FlagNotOpen:
            continue  # a rule this rating did not raise


def _starts(client: Client, today: date, rng: random.Random) -> list[datetime]:
    """When the client's sessions began: weekly-ish, the client's usual hour, up to a few days ago; a dropout's
    one or two sessions long enough ago to count as a dropout."""
    hour = rng.randint(9, 16)
    if client.course == "dropout":
        first = today - timedelta(days=rng.randint(DROPOUT_DAYS + 15, 110))
        days = [first, first + timedelta(days=7)][: rng.randint(1, 2)]
    else:
        first, day = today - timedelta(days=rng.randint(95, 122)), today - timedelta(days=rng.randint(1, 5))
        days = []
        while day >= first:  # backwards from the latest, so that every ongoing client was seen recently
            days.append(day)
            day -= timedelta(days=rng.choice((7, 7, 7, 7, 6, 8, 14)))
        days.reverse()
    return [datetime(d.year, d.month, d.day, hour + rng.choice((0, 0, 0, 1, -1)), tzinfo=UTC) for d in days]


def _visits(client: Client, today: date, rng: random.Random) -> Iterator[Visit]:
    starts = _starts(client, today, rng)
    count, course = len(starts), client.course
    # ORS totals (0-40): intake in the clinical range (below 25 for adults, 28 for adolescents), then the course
    intake = rng.uniform(14, 23) if client.age >= 18 else rng.uniform(17, 26)
    change = {"improving": rng.uniform(8, 14), "deteriorating": -rng.uniform(6, 9)}.get(course, rng.uniform(4, 9))
    alliance = rng.uniform(36.8, 39.2)  # the client's usual SRS total, above the cutoff
    low: set[int] = set()
    if course == "repaired":  # one rupture, acknowledged before the next session, which is rated better
        low = {rng.randint(2, min(5, count - 2))}
    elif course == "rupture":  # one mid-course that recovers unacknowledged, one at the latest session: still open
        low = {count // 2, count - 1}
    wai_every = rng.choice((3, 4)) if client.wai else 0
    for k, start in enumerate(starts):
        # most change comes early in treatment; a deterioration goes on steadily
        progress = k / max(1, count - 1) if course == "deteriorating" else 1 - math.exp(-k / 4)
        ors_total = intake + change * progress + rng.uniform(-1.5, 1.5)
        if course == "ceiling":
            srs_total = 40.0
        elif k in low:
            srs_total = rng.uniform(29, SRS_CUTOFF - 2)
        elif k - 1 in low:
            srs_total = min(40.0, alliance + 0.8)
        else:
            srs_total = alliance + rng.uniform(-0.6, 0.6)
        wai = None
        if wai_every and (k + 1) % wai_every == 0:
            level = 4.0 + (srs_total - SRS_CUTOFF) * 0.2  # the WAI-SR (1-5) agrees with the SRS, roughly
            wai = tuple(max(1, min(5, round(level + rng.uniform(-0.9, 0.9)))) for _ in range(12))
        repaired = course == "repaired" and k in low and k + 1 < count
        acknowledged = start + timedelta(days=rng.randint(1, 3), hours=rng.randint(-2, 4)) if repaired else None
        srs = _marks(srs_total, 0 if course == "ceiling" else 3, rng)  # 40/40: every line at its end
        yield Visit(start, _marks(ors_total, 10, rng), srs, wai, acknowledged)


def _marks(total: float, spread: int, rng: random.Random) -> tuple[int, ...]:
    """Four marks in mm (0-100) adding up to ``total`` (a total is the marks' sum in cm), each a little off the
    mean as a hand-drawn mark is."""
    goal = round(min(40.0, max(0.0, total)) * 10)
    marks = [max(0, min(100, round(goal / 4) + rng.randint(-spread, spread))) for _ in range(3)]
    marks.append(max(0, min(100, goal - sum(marks))))
    return tuple(marks)


def _encounter(client: Client, clinician: Clinician, number: int, start: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"{client.id}-s{number:02d}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "subject": {"reference": f"Patient/{client.id}"},
        "participant": [
            {
                "type": [{"coding": [{"system": PARTICIPATION, "code": "PPRF", "display": "primary performer"}]}],
                "individual": {"reference": f"Practitioner/{clinician.id}"},
            }
        ],
        "period": {"start": _instant(start), "end": _instant(start + timedelta(minutes=50))},
        "serviceProvider": {"reference": f"Organization/{clinician.program}"},
    }


def _responder(fhir: Interactions, session: WriteSession, encounter: dict[str, Any]) -> Respond:
    """Submits the session's responses: the client's own (subject and author), in the session's Encounter, which
    scoring reads for the clinician and the program."""

    def respond(canonical: str, authored: datetime, items: list[dict[str, Any]]) -> str:
        instrument = canonical.rsplit("/", 1)[1].partition("|")[0]
        response = {
            "resourceType": "QuestionnaireResponse",
            # an identifier, like every form submission: write-back finds the response by it
            "identifier": {"system": f"{BASE}/sandbox-history", "value": f"{encounter['id']}-{instrument}"},
            "questionnaire": canonical,
            "status": "completed",
            "subject": encounter["subject"],
            "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "author": encounter["subject"],
            "authored": _instant(authored),
            "item": items,
        }
        return fhir.create(session, "QuestionnaireResponse", response).stored.id

    return respond


def _line_items(lines: tuple[str, ...], marks: tuple[int, ...], *, respondent: bool = False) -> list[dict[str, Any]]:
    items = [{"linkId": n, "answer": [{"valueInteger": m}]} for n, m in zip(lines, marks, strict=True)]
    if respondent:  # the ORS asks who fills it in: the client themselves
        items.insert(0, {"linkId": "respondent", "answer": [{"valueCoding": SELF}]})
    return items


def _wai_items(codes: tuple[int, ...]) -> list[dict[str, Any]]:
    """The twelve WAI-SR answers; the subscale and total items are calculated and optional: scoring sums these."""
    return [
        {
            "linkId": f"wai-sr-{n}",
            "answer": [{"valueCoding": {"system": WAI_FREQUENCY, "code": str(c), "display": WAI_DISPLAY[c - 1]}}],
        }
        for n, c in enumerate(codes, start=1)
    ]


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

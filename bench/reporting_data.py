"""The data of bench/reporting.py: a practice scored by the server's own scoring engine, a pure function of (seed,
client number) like bench/search_data.py, whose START and two-year window it shares.

- One organisation, its clinic (``partOf`` the organisation) and 6 programs (``partOf`` the clinic); 40 clinicians
  (Practitioner, and a PractitionerRole linking each to one program).
- Clients (Patient with a birth date, aged 13-78 when the data starts), each seen by one clinician, in that
  clinician's program, for all their sessions.  About 12 % come once or twice (early dropouts); the others' numbers
  of sessions spread widely (log-normal) so that the Observations add up to the number asked for.  Sessions are
  weekly-ish (now and then a fortnight), squeezed closer when a long series would not fit in the two years, and
  start anywhere in them (a series running past the end continues at the start: a steady practice); an ORS
  at the hour, an SRS 50 minutes later in ~93 % of sessions, and for ~30 % of clients a WAI-SR every fourth
  session; one Encounter reference per session (the Encounters themselves are not written).
- The marks (ORS lines improving from an intake for most, deteriorating for some; SRS lines around a client's own
  alliance level with ruptures, ~15 % of ratings below the cutoff of 36; some clients at 40/40 throughout; WAI-SR
  frequencies) go into QuestionnaireResponses that are never stored: the scoring engine's own pipeline
  (``ScoringPipeline.results``, with the client's history held in memory instead of read from the database) turns
  each into the Observations and Flags the server would write, with their interpretations, components, series and
  attribution extensions.  Flags a later session of the instrument resolves are closed as scoring closes them
  (inactive, ``period.end`` that session); before that, clinicians acknowledge many as the clinician view does
  (``flag-acknowledgement`` by/at, inactive, ``period.end``), some exactly at the next session.
  QuestionnaireResponses and Provenances are not written: the reports never read them.

What the benchmark checks its reports against (``facts`` of a batch) is computed here from the Observations
themselves, not from the reporting index.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from bench.search_data import START, WINDOW_MINUTES, _uuid
from fhir_server import fhirjson
from fhir_server.canonical import BASE
from fhir_server.scoring.attribution import CLINICIAN, PROGRAM
from fhir_server.scoring.history import ScoringContext
from fhir_server.scoring.pipeline import ScoringPipeline
from fhir_server.scoring.resources import ACKNOWLEDGED, flag_code
from fhir_server.store.records import Stored

PROGRAMS, CLINICIANS = 6, 40
ORGANISATION, CLINIC = "bench-org", "bench-clinic"
ORGANISATION_NAME = "Bench Counselling"
QUESTIONNAIRE = "http://fit-fhir.org/fhir/Questionnaire/{}"
RESPONDENT = f"{BASE}/CodeSystem/fit-respondent"
WAI_FREQUENCY = f"{BASE}/CodeSystem/wai-frequency"
SRS_LINES = ("relationship", "goals", "approach", "overall")
ORS_LINES = ("individually", "interpersonally", "socially", "overall")
SRS_CUTOFF = 36  # questionnaires/srs/scoring.json: below it, a conversation about the alliance
ALLIANCE_FLAGS = ("srs-below-cutoff", "srs-drop", "srs-sustained-decline", "wai-sr-subscale-drop")
DAY = 24 * 60
WINDOW_DAYS = WINDOW_MINUTES // DAY
DROPOUT_SHARE = 0.12
Rows = list[tuple[str, str, dict]]


def program_id(number: int) -> str:
    return f"bench-program-{number + 1}"


def clinician_id(number: int) -> str:
    return f"bench-clinician-{number + 1:02d}"


def program_of(clinician: int) -> int:
    return clinician % PROGRAMS


def structure(_seed: int = 0) -> Rows:
    """The organisation, its clinic, the programs and the clinicians with their roles."""
    rows: Rows = [
        ("Organization", ORGANISATION, {"resourceType": "Organization", "active": True, "name": ORGANISATION_NAME}),
        (
            "Organization",
            CLINIC,
            {
                "resourceType": "Organization",
                "active": True,
                "name": "Bench Clinic",
                "partOf": {"reference": f"Organization/{ORGANISATION}"},
            },
        ),
    ]
    for p in range(PROGRAMS):
        body = {"name": f"Program {p + 1}", "partOf": {"reference": f"Organization/{CLINIC}"}}
        rows.append(("Organization", program_id(p), {"resourceType": "Organization", "active": True, **body}))
    for c in range(CLINICIANS):
        name = {"family": f"Clinician{c + 1}", "given": ["Sam"]}
        rows.append(("Practitioner", clinician_id(c), {"resourceType": "Practitioner", "active": True, "name": [name]}))
        role = {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{clinician_id(c)}"},
            "organization": {"reference": f"Organization/{program_id(program_of(c))}"},
        }
        rows.append(("PractitionerRole", f"bench-role-{c + 1:02d}", role))
    return rows


def client_counts(seed: int, observations: int, clients: int) -> list[int]:
    """Observations per client, adding up to ``observations``: early dropouts 2 or 4 (one or two sessions of ORS
    and SRS), the others in proportion to a log-normal weight (capped at 3 times the mean)."""
    rng = random.Random(f"{seed}:client-counts")
    counts: list[int | None] = []
    weights = []
    for _ in range(clients):
        if rng.random() < DROPOUT_SHARE:
            counts.append(2 * rng.randint(1, 2))
            weights.append(0.0)
        else:
            counts.append(None)
            weights.append(min(rng.lognormvariate(0, 0.6), 3.0))
    left = observations - sum(c for c in counts if c is not None)
    total = sum(weights) or 1.0
    shares = [left * w / total for w in weights]
    floors = [math.floor(s) for s in shares]
    extra = left - sum(floors)
    for i in sorted(range(clients), key=lambda i: floors[i] - shares[i])[:extra]:
        floors[i] += 1
    return [c if c is not None else max(f, 1) for c, f in zip(counts, floors, strict=True)]


# -- one client's sessions and marks --------------------------------------------------------------------------
@dataclass
class Session:
    minute: int  # of the ORS (the session's start), minutes from START
    encounter: str
    srs: tuple[int, ...] | None  # mm on each line, 0-100
    ors: tuple[int, ...]
    wai: tuple[int, ...] | None  # frequencies 1-5 of the 12 items


@dataclass
class ClientPlan:
    number: int
    id: str
    birth_date: str
    clinician: int
    sessions: list[Session] = field(default_factory=list)

    @property
    def program(self) -> int:
        return program_of(self.clinician)


def _age_years(rng: random.Random) -> int:
    band = rng.random()
    if band < 0.12:
        return rng.randint(13, 17)
    if band < 0.30:
        return rng.randint(18, 25)
    if band < 0.85:
        return rng.randint(26, 64)
    return rng.randint(65, 78)


def _lines(rng: random.Random, total: float, spread: float) -> tuple[int, ...]:
    """Four lines (mm, 0-100) around ``total`` (0-40)."""
    return tuple(max(0, min(100, round((total / 4 + rng.gauss(0, spread)) * 10))) for _ in range(4))


def plan_client(seed: int, number: int, n_obs: int) -> ClientPlan:
    rng = random.Random(f"{seed}:client:{number}")
    client_id = _uuid(rng)
    age = _age_years(rng)
    born = START.date() - timedelta(days=age * 365 + rng.randrange(365))
    plan = ClientPlan(number, client_id, born.isoformat(), rng.randrange(CLINICIANS))
    alliance = 39.8 - rng.expovariate(1 / 1.6)  # the client's usual SRS total
    at_ceiling = rng.random() < 0.06  # rates 40/40 every time
    intake = max(3.0, min(37.0, rng.gauss(19, 6)))
    gain = rng.gauss(6, 6)  # ORS change from intake over the series (negative: deteriorating)
    wai_level = rng.uniform(3.0, 4.8) if rng.random() < 0.3 else None

    kinds = []  # (has SRS, has WAI-SR) per session, within the Observation budget
    left = n_obs
    while left > 0:
        left -= 1
        srs = left > 0 and (n_obs <= 4 or rng.random() < 0.93)
        left -= srs
        wai = wai_level is not None and len(kinds) % 4 == 3 and left >= 4
        left -= 4 * wai
        kinds.append((srs, wai))
    steps = [(14 if rng.random() < 0.08 else 7) + rng.uniform(-1, 1) for _ in kinds[1:]]
    span = sum(steps)
    room = WINDOW_DAYS - 2
    if span > room:
        steps, span = [s * room / span for s in steps], room
    # A practice in a steady state: series start anywhere in the two years, and one that would run past the end
    # continues at the start instead (a client already in treatment when the data begins, who came back later).
    day = rng.uniform(0, room - span) if len(kinds) <= 2 else rng.uniform(0, room)
    for k, (srs, wai) in enumerate(kinds):
        if k:
            day += steps[k - 1]
        minute = int(day - room if day > room else day) * DAY + rng.randint(8, 17) * 60
        while any(minute == s.minute for s in plan.sessions):  # where a continued series meets its start
            minute += 60
        expected = intake + gain * (1 - math.exp(-k / 5))
        ors = _lines(rng, max(0.4, min(40.0, expected + rng.gauss(0, 2.5))), 0.8)
        if not srs:
            srs_lines = None
        elif at_ceiling:
            srs_lines = (100, 100, 100, 100) if rng.random() < 0.9 else _lines(rng, 39.0, 0.3)
        else:
            rupture = rng.uniform(3, 8) if rng.random() < 0.05 else 0.0
            srs_lines = _lines(rng, min(40.0, alliance + rng.gauss(0, 0.9) - rupture), 0.25)
        wai_items = (
            tuple(max(1, min(5, round(wai_level + rng.gauss(0, 0.6)))) for _ in range(12))
            if wai and wai_level is not None
            else None
        )
        plan.sessions.append(Session(minute, f"Encounter/{_uuid(rng)}", srs_lines, ors, wai_items))
    plan.sessions.sort(key=lambda s: s.minute)
    return plan


# -- scoring with the server's own pipeline -------------------------------------------------------------------
@cache
def _pipeline() -> tuple[ScoringPipeline, dict[str, tuple[str, dict]]]:
    """The scoring pipeline of the server's library and settings, and per instrument its canonical and
    Questionnaire (one per loading process)."""
    from fhir_server.config import Settings
    from fhir_server.library.discover import discover

    settings = Settings()
    library = discover(settings.library_paths(), settings.content_pack_paths())
    pipeline = ScoringPipeline(library, settings.scoring_overrides)
    found = {}
    for name in ("ors", "srs", "wai-sr"):
        url = QUESTIONNAIRE.format(name)
        version = library.preferred_version(url)
        found[name] = (f"{url}|{version}", library.questionnaire(url, version))
    return pipeline, found


class _History:
    """The scoring session as the pipeline reads it, over one client's results held in memory."""

    def __init__(self, patient: dict[str, Any]) -> None:
        self.patient = _stored("Patient", patient["id"], patient)
        self.results: dict[str, list[Stored]] = {}  # measure code → its results, oldest first
        self.active: dict[str, Stored] = {}  # Flag id → the active Flag

    def scoring_context(self, subject: Any, measure: Any, flags: Any, patient_id: str | None) -> ScoringContext:
        history: list[Stored] = []
        if measure is not None:
            earlier = self.results.get(measure[1], [])
            history = list(reversed(earlier[-measure[4] :]))
            if measure[5] and earlier and earlier[0] not in history:
                history.append(earlier[0])
        return ScoringContext(history, list(self.active.values()), self.patient if patient_id else None)

    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Stored | None:
        return None

    def peek(self, resource_type: str, resource_id: str) -> Stored | None:
        return None


def _stored(resource_type: str, resource_id: str, resource: dict[str, Any]) -> Stored:
    return Stored(resource_type, resource_id, 1, START, False, fhirjson.dumps(resource).decode())


def _when(minute: int) -> str:
    return (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _answers(name: str, session: Session) -> list[dict[str, Any]]:
    if name == "ors":
        respondent = {"linkId": "respondent", "answer": [{"valueCoding": {"system": RESPONDENT, "code": "self"}}]}
        lines = zip(ORS_LINES, session.ors, strict=True)
        return [respondent, *({"linkId": n, "answer": [{"valueInteger": v}]} for n, v in lines)]
    if name == "srs":
        lines = zip(SRS_LINES, session.srs or (), strict=True)
        return [{"linkId": n, "answer": [{"valueInteger": v}]} for n, v in lines]
    return [
        {"linkId": f"wai-sr-{i}", "answer": [{"valueCoding": {"system": WAI_FREQUENCY, "code": str(v)}}]}
        for i, v in enumerate(session.wai or (), 1)
    ]


def client_resources(seed: int, plan: ClientPlan) -> tuple[Rows, dict[str, Any]]:
    """The client's Patient, Observations and Flags as the server would hold them after every session was scored
    and the clinician had acknowledged what they did; and the facts the benchmark checks."""
    pipeline, instruments = _pipeline()
    rng = random.Random(f"{seed}:acknowledge:{plan.number}")
    clinician = f"Practitioner/{clinician_id(plan.clinician)}"
    program = f"Organization/{program_id(plan.program)}"
    patient = {
        "resourceType": "Patient",
        "id": plan.id,
        "identifier": [{"system": f"{BASE}/sid/client-number", "value": f"R{plan.number:07d}"}],
        "name": [{"family": f"Client{plan.number}", "given": ["Robin"]}],
        "gender": ("female", "male", "other")[plan.number % 3],
        "birthDate": plan.birth_date,
    }
    memory = _History(patient)
    observations: list[dict[str, Any]] = []
    flags: dict[str, dict[str, Any]] = {}
    administered = [  # (minute, instrument, session), in time order
        (s.minute + offset, name, s)
        for s in plan.sessions
        for name, offset, given in (("ors", 0, True), ("srs", 50, s.srs is not None), ("wai-sr", 55, s.wai is not None))
        if given
    ]
    following = {}  # index → minute of the next administration of the same instrument
    last_seen: dict[str, int] = {}
    for index in range(len(administered) - 1, -1, -1):
        minute, name, _ = administered[index]
        following[index] = last_seen.get(name)
        last_seen[name] = minute
    for index, (minute, name, session) in enumerate(administered):
        canonical, questionnaire = instruments[name]
        response = {
            "resourceType": "QuestionnaireResponse",
            "id": _uuid(rng),
            "questionnaire": canonical,
            "status": "completed",
            "subject": {"reference": f"Patient/{plan.id}"},
            "encounter": {"reference": session.encounter},
            "authored": _when(minute),
            "author": {"reference": f"Patient/{plan.id}"},
            "extension": [
                {"url": CLINICIAN, "valueReference": {"reference": clinician}},
                {"url": PROGRAM, "valueReference": {"reference": program}},
            ],
            "item": _answers(name, session),
        }
        rules = pipeline.rules_for(response)
        scored, raised, ended, _ = pipeline.results(memory, rules, response, questionnaire)  # type: ignore[arg-type]
        for earlier in ended:  # resolved or superseded by this session, as scoring closes them
            flag = flags[earlier.id]
            flag["status"] = "inactive"
            flag["period"] = {**flag["period"], "end": response["authored"]}
            memory.active.pop(earlier.id, None)
        primary = rules.primary.code if rules.primary else None
        for observation in scored:
            observations.append(observation)
            if observation["code"]["coding"][0]["code"] == primary:
                memory.results.setdefault(primary, []).append(_stored("Observation", observation["id"], observation))
        for flag in raised:
            flags[flag["id"]] = flag
            if not _acknowledged(rng, flag, minute, following[index], clinician):
                memory.active[flag["id"]] = _stored("Flag", flag["id"], flag)
    rows: Rows = [("Patient", plan.id, patient)]
    rows += [("Observation", o["id"], o) for o in observations]
    rows += [("Flag", f["id"], f) for f in flags.values()]
    return rows, _facts(plan, observations)


def _acknowledged(rng: random.Random, flag: dict[str, Any], raised: int, following: int | None, who: str) -> bool:
    """Whether the clinician acknowledges the Flag before the instrument's next administration (then it is
    closed as the clinician view closes it); alliance Flags more often than the others.  Some exactly at the
    next administration, the boundary the concern-followed-up indicator counts."""
    share = 0.6 if flag_code(flag) in ALLIANCE_FLAGS else 0.25
    if rng.random() >= share:
        return False
    if following is None:
        at = min(raised + rng.randint(60, 7 * DAY), WINDOW_MINUTES - 1)
    elif rng.random() < 0.08:
        at = following
    else:
        at = raised + max(1, int((following - raised) * rng.uniform(0.1, 0.95)))
    now = _when(at)
    flag["status"] = "inactive"
    flag["period"] = {**flag["period"], "end": now}
    by, when = {"url": "by", "valueReference": {"reference": who}}, {"url": "at", "valueDateTime": now}
    flag.setdefault("extension", []).append({"url": ACKNOWLEDGED, "extension": [by, when]})
    return True


def _facts(plan: ClientPlan, observations: list[dict[str, Any]]) -> dict[str, Any]:
    """From the client's Observations: SRS totals per month (count, below the cutoff, sum), and the span the
    early-dropout indicator judges (first and last result, sessions), with the client's program."""
    srs: dict[str, list[float]] = {}
    results = []
    for observation in observations:
        code = observation["code"]["coding"][0]["code"]
        effective = observation["effectiveDateTime"]
        if code == "srs-total":
            value = float(observation["valueQuantity"]["value"])
            cell = srs.setdefault(effective[:7], [0, 0, 0.0])
            cell[0] += 1
            cell[1] += value < SRS_CUTOFF
            cell[2] += value
        if code in ("ors-total", "srs-total", "wai-sr-total"):
            results.append((effective, observation["encounter"]["reference"]))
    results.sort()
    return {
        "program": f"Organization/{program_id(plan.program)}",
        "srs": srs,
        "first": results[0][0] if results else None,
        "last": results[-1][0] if results else None,
        "sessions": len({encounter for _, encounter in results}),
    }


def batch_rows(seed: int, first: int, counts: list[int]) -> tuple[Rows, list[dict[str, Any]]]:
    rows: Rows = []
    facts = []
    for offset, n_obs in enumerate(counts):
        found, known = client_resources(seed, plan_client(seed, first + offset, n_obs))
        rows.extend(found)
        facts.append(known)
    return rows, facts


def months(first: date, last: date) -> list[str]:
    """YYYY-MM from ``first``'s month to ``last``'s, both included."""
    found, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        found.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def second_year() -> tuple[datetime, datetime]:
    """The data's second year: [start, end) in naive UTC."""
    start = START + timedelta(days=365)
    return start, START + timedelta(minutes=WINDOW_MINUTES)

"""The searches of bench/search.py, each response checked against the generated data (bench/search_data.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from bench.search_data import (
    INSTRUMENTS,
    SNOMED,
    START,
    WINDOW_MINUTES,
    Plan,
    observation_counts,
    plan_patient,
)
from bench.shipped import canonical


class CheckFailed(Exception):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _entries(bundle: dict, mode: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def _has_next(bundle: dict) -> bool:
    return any(link["relation"] == "next" for link in bundle.get("link", []))


class Truth:
    """What the database holds, regenerated from the seed on demand."""

    def __init__(self, seed: int, observations: int, patients: int) -> None:
        self.seed, self.patients = seed, patients
        self.counts = observation_counts(seed, observations, patients)
        self._srs: list[tuple[str, int]] | None = None

    def plan(self, number: int) -> Plan:
        return plan_patient(self.seed, number, self.counts[number])

    def srs_responses(self) -> list[tuple[str, int]]:
        """(id, authored minute) of every SRS QuestionnaireResponse, in id order (the server's default order)."""
        if self._srs is None:
            found = []
            for number in range(self.patients):
                found += [(q[0], q[2]) for q in self.plan(number).responses if q[1] == "srs"]
            self._srs = sorted(found)
        return self._srs


Request = tuple[str, list[tuple[str, str]], Callable[[dict], tuple[int, int]]]


def query_a(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    instrument = rng.choice(("srs", "ors"))
    code = INSTRUMENTS[instrument][0]
    newest = [o[0] for o in sorted((o for o in plan.observations if o[1] == instrument), key=lambda o: -o[2])]
    params = [("subject", f"Patient/{plan.id}"), ("code", f"{SNOMED}|{code}"), ("_sort", "-date"), ("_count", "20")]

    def check(bundle: dict) -> tuple[int, int]:
        got = _entries(bundle, "match")
        for r in got:
            _expect(r["subject"]["reference"] == f"Patient/{plan.id}", "an Observation of another patient")
            _expect(r["code"]["coding"][0]["code"] == code, "an Observation with another code")
        dates = [r["effectiveDateTime"] for r in got]
        _expect(dates == sorted(dates, reverse=True), "not sorted by date, newest first")
        _expect([r["id"] for r in got] == newest[:20], "not the patient's 20 newest Observations with that code")
        _expect(_has_next(bundle) == (len(newest) > 20), "next link wrong")
        return len(got), 0

    return "Observation", params, check


def query_b(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    active = {f[0] for f in plan.flags if f[1] == "active"}

    def check(bundle: dict) -> tuple[int, int]:
        _expect(not _entries(bundle, "outcome"), "a parameter was ignored (no Flag status SearchParameter?)")
        got = _entries(bundle, "match")
        _expect(all(r["status"] == "active" for r in got), "an inactive Flag")
        _expect({r["id"] for r in got} == active, "not exactly the patient's active Flags")
        return len(got), 0

    return "Flag", [("patient", plan.id), ("status", "active")], check


def query_c(truth: Truth, rng: random.Random) -> Request:
    day = START + timedelta(minutes=WINDOW_MINUTES) - timedelta(days=rng.randint(1, 60))
    floor = int((day - START).total_seconds() // 60)
    expected = [qid for qid, minute in truth.srs_responses() if minute >= floor][:21]
    srs = canonical("srs")

    def check(bundle: dict) -> tuple[int, int]:
        got = _entries(bundle, "match")
        _expect(all(r["questionnaire"] == srs for r in got), "a response to another Questionnaire")
        _expect(all(r["authored"] >= day.strftime("%Y-%m-%d") for r in got), "authored before the date")
        _expect([r["id"] for r in got] == expected[:20], "not the first 20 matching responses")
        _expect(_has_next(bundle) == (len(expected) > 20), "next link wrong")
        return len(got), 0

    return "QuestionnaireResponse", [("questionnaire", srs), ("authored", f"ge{day:%Y-%m-%d}")], check


def query_d1(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))

    def check(bundle: dict) -> tuple[int, int]:
        _expect([r["id"] for r in _entries(bundle, "match")] == [plan.id], "not the Patient")
        included = _entries(bundle, "include")
        _expect({r["id"] for r in included} == {f[0] for f in plan.flags}, "not exactly the patient's Flags")
        return 1, len(included)

    return "Patient", [("_id", plan.id), ("_revinclude", "Flag:patient")], check


def query_d2(truth: Truth, rng: random.Random) -> Request:
    plan = truth.plan(rng.randrange(truth.patients))
    page = sorted(plan.responses)[:20]

    def check(bundle: dict) -> tuple[int, int]:
        got, included = _entries(bundle, "match"), _entries(bundle, "include")
        _expect([r["id"] for r in got] == [q[0] for q in page], "not the patient's responses")
        _expect({r["id"] for r in included} == {o for q in page for o in q[3]}, "not the derived Observations")
        return len(got), len(included)

    return (
        "QuestionnaireResponse",
        [("subject", f"Patient/{plan.id}"), ("_revinclude", "Observation:derived-from")],
        check,
    )


CASES = [  # key, what, build, p99 target (ms)
    ("a", "Observation?subject=Patient/X&code=S|C&_sort=-date&_count=20", query_a, 25.0),
    ("b", "Flag?patient=X&status=active", query_b, 25.0),
    ("c", "QuestionnaireResponse?questionnaire=URL&authored=geD", query_c, None),
    ("d1", "Patient?_id=X&_revinclude=Flag:patient", query_d1, None),
    ("d2", "QuestionnaireResponse?subject=Patient/X&_revinclude=Observation:derived-from", query_d2, None),
]

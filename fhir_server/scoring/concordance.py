"""The gap between the therapist's impression of a session and the client's own rating of it (issue 21).

A clinician-rated instrument declares, in its scoring.json ``concordance``, the client-rated instrument it is the
mirror of and which of its numbers faces which of the client's (the therapist's Relationship line and the client's
SRS Relationship line, …, the two totals).  When both ratings of one session exist — the same client, the same
local ``Encounter`` — scoring writes one Observation of the gap, therapist - client, per domain (components) and
in total (its value), ``derivedFrom`` both responses; and a Flag for the therapist when they rated the session
higher than the client by at least a setting's margin, on the total or on one domain.  Whichever rating arrives
second makes the pair; an amended rating re-states it (the Flag ends when the margin is no longer reached); a
rating entered in error voids it.  Only the client's own rating pairs (a parent's is another series), and each
session has one gap: its id comes from the client and the Encounter, so re-rating replaces it, never adds one.

The gap belongs to the clinician's series: it is about the therapist's impression and, like their rating, is not
shown to the client (auth/access.py).  Two ratings of one session scored at once: the second waits for the first
(``encounter_results``' lock) and so sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_server import fhirjson
from fhir_server.canonical import MEASURES_CODESYSTEM
from fhir_server.scoring import resources as build
from fhir_server.scoring import texts
from fhir_server.scoring.attribution import CLINICIAN as SESSION_CLINICIAN
from fhir_server.scoring.attribution import PROGRAM as SESSION_PROGRAM
from fhir_server.scoring.flag_state import end_flag
from fhir_server.scoring.history import ScoringSession
from fhir_server.scoring.rules import Concordance, GapPair, ScoringRules
from fhir_server.scoring.settings import ScoringSettings
from fhir_server.store.records import Stored

CLINICIAN = "clinician"  # the rater series of a clinician's ratings and of the gaps
SELF = "self"
_VOID = "entered-in-error"
_ATTRIBUTION = (SESSION_CLINICIAN, SESSION_PROGRAM)


@dataclass(frozen=True)
class Pairing:
    rules: ScoringRules  # the clinician-rated instrument's
    spec: Concordance

    def clinician_side(self, response: dict[str, Any]) -> bool:
        return _url(response) == self.rules.questionnaire


def pairings(instruments: Iterable[ScoringRules]) -> dict[str, Pairing]:
    """Each pairing, under both Questionnaire urls (the clinician's and the client's)."""
    found = {}
    for rules in instruments:
        if rules.concordance is not None:
            pairing = Pairing(rules, rules.concordance)
            found[rules.questionnaire] = found[rules.concordance.client] = pairing
    return found


def pair(
    session: ScoringSession,
    pairing: Pairing,
    response: dict[str, Any],
    observations: list[dict[str, Any]],
    settings: ScoringSettings,
) -> list[Stored]:
    """After ``response``'s Observations are written: the session's gap and its Flag, when the other rating is
    there (nothing otherwise)."""
    session_of = _session(response)
    if session_of is None:
        return []
    subject, encounter = session_of
    clinician = pairing.clinician_side(response)
    spec = pairing.spec
    mine = next((o for o in observations if _code(o) == (spec.total.rater if clinician else spec.total.client)), None)
    if mine is None or (not clinician and build.series_of(mine) != SELF):
        return []
    wanted = (spec.total.client, SELF) if clinician else (spec.total.rater, CLINICIAN)
    known = [o["id"] for o in observations]
    other = _other_rating(session, subject, encounter, *wanted, known=known)
    if other is None:
        return []
    rater, client = (mine, other) if clinician else (other, mine)
    gap = _gap(spec, subject, encounter, rater, client)
    written = [session.update(gap, gap["id"], skip_unchanged=True).stored]
    flag_id = build.derived_id(gap["id"], spec.flag.id)
    totals = (_values(rater)[spec.total.rater], _values(client)[spec.total.client])
    raised = _flag(pairing, settings, gap, flag_id, totals)
    if raised is not None:
        written.append(session.update(raised, flag_id, skip_unchanged=True).stored)
    else:
        ended = end_flag(session, flag_id, gap.get("effectiveDateTime"))  # a re-stated pair under the margins
        written += [ended] if ended is not None else []
    return written


def retract(session: ScoringSession, pairing: Pairing, response: dict[str, Any]) -> list[Stored]:
    """``response`` entered in error: the gap it made, and its Flag, are void too."""
    session_of = _session(response)
    if session_of is None:
        return []
    gap_key = gap_id(*session_of)
    current = session.current("Observation", gap_key, lock=True)
    gap = fhirjson.loads_stored(current.content or "{}") if current is not None and not current.deleted else {}
    own = f"QuestionnaireResponse/{response['id']}"
    if gap.get("status") == _VOID or own not in [d.get("reference") for d in gap.get("derivedFrom", [])]:
        return []
    written = []
    for resource_type, resource_id in (
        ("Observation", gap_key),
        ("Flag", build.derived_id(gap_key, pairing.spec.flag.id)),
    ):
        stored = session.current(resource_type, resource_id, lock=True)
        if stored is None or stored.deleted:
            continue
        resource = fhirjson.loads_stored(stored.content or "{}")
        resource["status"] = _VOID
        written.append(session.rewrite(stored, resource).stored)
    return written


def gap_id(subject: str, encounter: str) -> str:
    """One gap per client and session: re-rating replaces it."""
    return "gap-" + hashlib.sha256(f"{subject}|{encounter}".encode()).hexdigest()[:40]


# -- the pair ---------------------------------------------------------------------------------------------
def _other_rating(
    session: ScoringSession, subject: str, encounter: str, code: str, series: str, *, known: list[str]
) -> dict[str, Any] | None:
    """The newest current rating of ``code`` in ``series`` for this client in this session (``known``: the ids
    of this response's own results, which are not it)."""
    found = []
    lock = gap_id(subject, encounter)  # the other rating of this session, scored at this moment, waits for us
    for stored in session.encounter_results(encounter.partition("/")[2], known, lock=lock):
        observation = fhirjson.loads_stored(stored.content or "{}")
        if _code(observation) != code or observation.get("status") == _VOID:
            continue
        if (observation.get("subject") or {}).get("reference") != subject:
            continue
        if build.series_of(observation) != series:
            continue
        found.append((observation.get("effectiveDateTime", ""), stored.last_updated, observation))
    return max(found, key=lambda f: (f[0], f[1]))[2] if found else None


def _gap(
    spec: Concordance,
    subject: str,
    encounter: str,
    rater: dict[str, Any],
    client: dict[str, Any],
) -> dict[str, Any]:
    rater_values, client_values = _values(rater), _values(client)
    components = []
    for domain in spec.domains:
        if domain.rater in rater_values and domain.client in client_values:
            difference = rater_values[domain.rater] - client_values[domain.client]
            components.append({"code": _coding(domain), "valueQuantity": build.quantity(difference, "{score}")})
    components.append(
        {
            "code": {
                "coding": [{"system": MEASURES_CODESYSTEM, "code": build.SERIES_CODE, "display": "Respondent series"}]
            },
            "valueString": CLINICIAN,
        }
    )
    amended = "amended" in (rater.get("status"), client.get("status"))
    gap: dict[str, Any] = {
        "resourceType": "Observation",
        "id": gap_id(subject, encounter),
        # its key in an EHR (ehr/payload.py: every resource written back is found again by its identifier)
        "identifier": [{"system": build.OBSERVATION_IDENTIFIER, "value": f"{gap_id(subject, encounter)}#gap"}],
        "status": "amended" if amended else "final",
        "category": [build.SURVEY],
        "code": _coding(spec.total),
        "subject": {"reference": subject},
        "encounter": {"reference": encounter},
        "effectiveDateTime": client.get("effectiveDateTime") or rater.get("effectiveDateTime"),
        "performer": rater.get("performer", []),
        "valueQuantity": build.quantity(rater_values[spec.total.rater] - client_values[spec.total.client], "{score}"),
        "derivedFrom": [*_responses(rater), *_responses(client)],
        "component": components,
    }
    # who and where: the session's, as scoring stamped it on the ratings (the therapist's first)
    stamped = [e for o in (rater, client) for e in o.get("extension", []) if e.get("url") in _ATTRIBUTION]
    stamp = list({e["url"]: e for e in reversed(stamped)}.values())
    if stamp:
        gap["extension"] = stamp
    if not gap["performer"]:
        del gap["performer"]
    return build.label_clinician_only(gap)


def _flag(
    pairing: Pairing, settings: ScoringSettings, gap: dict[str, Any], flag_id: str, totals: tuple[Decimal, Decimal]
) -> dict[str, Any] | None:
    """The therapist's Flag when they rated the session higher than the client by the total's margin or a
    domain's; its question names the domains the client rated lower (all of them over the domain margin)."""
    spec = pairing.spec
    total_margin, domain_margin = margins(pairing.rules, settings)
    total = Decimal(str(gap["valueQuantity"]["value"]))
    by_code = {d.code: d for d in spec.domains}
    domains = [
        (Decimal(str(c["valueQuantity"]["value"])), by_code[code])
        for c in gap["component"]
        if (code := _code(c)) in by_code
    ]
    over = [d for value, d in sorted(domains, key=lambda v: -v[0]) if value >= domain_margin]
    if total < total_margin and not over:
        return None
    lower = [d.label for d in over] or ["today's session"]
    message = f"{texts.rated_apart(*totals)} {spec.flag.message.format(domains=texts.joined(lower))}"
    resource = build.flag_resource(
        flag_id, f"{gap['id']}#{spec.flag.id}", (spec.flag.code, spec.flag.display or spec.flag.code, message),
        spec.flag.severity, [f"Observation/{gap['id']}"], gap, CLINICIAN,
    )  # fmt: skip
    if "extension" in gap:
        resource["extension"] += gap["extension"]
    return build.label_clinician_only(resource)


def margins(rules: ScoringRules, settings: ScoringSettings) -> tuple[Decimal, Decimal]:
    """How much higher than the client the therapist's total, or one domain, must be to raise the Flag."""
    flag = rules.concordance.flag if rules.concordance is not None else None
    if flag is None:
        raise ValueError(f"{rules.instrument} declares no concordance")
    return settings.threshold(rules, flag.totalSetting, "adult"), settings.threshold(rules, flag.domainSetting, "adult")


# -- reading ----------------------------------------------------------------------------------------------
def _session(response: dict[str, Any]) -> tuple[str, str] | None:
    """(Patient/x, Encounter/y) of a response filed under a local Encounter; None otherwise (no pair)."""
    subject = (response.get("subject") or {}).get("reference", "")
    encounter = (response.get("encounter") or {}).get("reference", "")
    kind, _, identity = encounter.partition("/")
    if not subject.startswith("Patient/") or kind != "Encounter" or not identity or "/" in identity:
        return None
    return subject, encounter


def _values(observation: dict[str, Any]) -> dict[str, Decimal]:
    values = {_code(observation): Decimal(str(observation["valueQuantity"]["value"]))}
    for component in observation.get("component", []):
        if "valueQuantity" in component:
            values[_code(component)] = Decimal(str(component["valueQuantity"]["value"]))
    return values


def _code(element: dict[str, Any]) -> str | None:
    coding = (element.get("code") or {}).get("coding") or []
    return next((c.get("code") for c in coding if c.get("system") == MEASURES_CODESYSTEM), None)


def _coding(pair: GapPair) -> dict[str, Any]:
    return {"coding": [{"system": MEASURES_CODESYSTEM, "code": pair.code, "display": pair.display or pair.code}]}


def _responses(observation: dict[str, Any]) -> list[dict[str, str]]:
    return [
        d for d in observation.get("derivedFrom", []) if d.get("reference", "").startswith("QuestionnaireResponse/")
    ]


def _url(response: dict[str, Any]) -> str:
    return str(response.get("questionnaire", "")).partition("|")[0]

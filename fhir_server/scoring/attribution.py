"""Who and where: the clinician and the program a scored session belongs to, recorded on every result.

Supervisors' reports group sessions by clinician and by program (issue 20), and a clinician who moves to another
program later must not take their earlier sessions along.  So the attribution is resolved once, when the response
is scored, and stamped on the response's Observations and Flags as two extensions; nothing re-derives it later.

- ``session-clinician``: a Reference(Practitioner | PractitionerRole);
- ``session-program``: a Reference(Organization) (programs nest in their clinic and organisation by
  ``Organization.partOf``).

Where they come from, the first that gives one (docs/architecture.md, "Attribution"):

1. the response itself: the two extensions on the QuestionnaireResponse, as the rating form writes them from its
   launch and a REST client may send them;
2. the launch context the EHR gave (the form only): a PractitionerRole or Organization in ``fhirContext``;
3. the response's Encounter: the participant who performed it (type PPRF, then ATND, PART, SPRF, then any
   practitioner) and its ``serviceProvider``; then its EpisodeOfCare's ``managingOrganization``;
4. the signed-in user (``fhirUser``, the form only) when it is a Practitioner or PractitionerRole;
5. for the program, the clinician's PractitionerRole ``organization``.

Reads go through ``read`` (``Type/id`` → resource or None): this server's own store when scoring a REST
submission, the EHR's FHIR API with the launch's token when the form builds its response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server.canonical import BASE

CLINICIAN = f"{BASE}/StructureDefinition/session-clinician"
PROGRAM = f"{BASE}/StructureDefinition/session-program"
CLINICIAN_TYPES = ("Practitioner", "PractitionerRole")
# v3 ParticipationType codes of Encounter.participant.type, the one responsible for the session first
PARTICIPANT_ORDER = ("PPRF", "ATND", "PART", "SPRF")
_RELATIVE = re.compile(r"(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")

Read = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class Attribution:
    clinician: str | None = None  # Practitioner/x or PractitionerRole/x
    program: str | None = None  # Organization/x

    def filled_from(self, other: Attribution) -> Attribution:
        return Attribution(self.clinician or other.clinician, self.program or other.program)

    @property
    def complete(self) -> bool:
        return bool(self.clinician and self.program)

    def extensions(self) -> list[dict[str, Any]]:
        found = [(CLINICIAN, self.clinician), (PROGRAM, self.program)]
        return [{"url": url, "valueReference": {"reference": ref}} for url, ref in found if ref]


def reference(value: Any, types: Iterable[str]) -> str | None:
    """``Type/id`` of a Reference (or a reference string) whose type is one of ``types``; an absolute reference
    keeps its last two segments (an EHR's ``https://ehr/fhir/Practitioner/7``); anything else None."""
    text = value.get("reference") if isinstance(value, dict) else value
    match = _RELATIVE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match["type"] not in types or "/_history/" in text:
        return None
    return f"{match['type']}/{match['id']}"


def declared(resource: dict[str, Any]) -> Attribution:
    """The attribution a resource states in its own extensions (a response, or a result stamped with it)."""
    found: dict[str, str | None] = {CLINICIAN: None, PROGRAM: None}
    for extension in resource.get("extension") or ():
        url = extension.get("url") if isinstance(extension, dict) else None
        if url in found and found[url] is None:
            types = CLINICIAN_TYPES if url == CLINICIAN else ("Organization",)
            found[url] = reference(extension.get("valueReference"), types)
    return Attribution(found[CLINICIAN], found[PROGRAM])


def from_context(context: Iterable[Any]) -> Attribution:
    """A launch's ``fhirContext`` items (references) that name a PractitionerRole or an Organization."""
    clinician = program = None
    for item in context:
        clinician = clinician or reference(item, ("PractitionerRole",))
        program = program or reference(item, ("Organization",))
    return Attribution(clinician, program)


def from_encounter(encounter: dict[str, Any]) -> Attribution:
    """The participant who performed the session (the most responsible kind first) and the service provider."""
    ranked: list[tuple[int, str]] = []
    for participant in encounter.get("participant") or ():
        who = reference((participant or {}).get("individual"), CLINICIAN_TYPES)
        if who is None:
            continue
        codes = {c.get("code") for t in participant.get("type") or () for c in (t or {}).get("coding") or ()}
        ranks = [PARTICIPANT_ORDER.index(c) for c in codes if c in PARTICIPANT_ORDER]
        ranked.append((min(ranks, default=len(PARTICIPANT_ORDER)), who))
    clinician = min(ranked, key=lambda r: r[0])[1] if ranked else None
    return Attribution(clinician, reference(encounter.get("serviceProvider"), ("Organization",)))


def resolve(
    response: dict[str, Any], read: Read, *, context: Iterable[Any] = (), user: str | None = None
) -> Attribution:
    """The attribution of a response about to be scored (or built by the form): see the module's list."""
    found = declared(response).filled_from(from_context(context))
    encounter = None
    if not found.complete:
        encounter_ref = reference(response.get("encounter"), ("Encounter",))
        encounter = read(encounter_ref) if encounter_ref else None
        if encounter is not None:
            found = found.filled_from(from_encounter(encounter))
    if found.program is None and encounter is not None:
        for episode_ref in encounter.get("episodeOfCare") or ():
            episode_id = reference(episode_ref, ("EpisodeOfCare",))
            episode = read(episode_id) if episode_id else None
            program = reference((episode or {}).get("managingOrganization"), ("Organization",))
            if program:
                found = found.filled_from(Attribution(None, program))
                break
    found = found.filled_from(Attribution(reference(user, CLINICIAN_TYPES) if user else None, None))
    if found.program is None and found.clinician and found.clinician.startswith("PractitionerRole/"):
        role = read(found.clinician)
        found = found.filled_from(Attribution(None, reference((role or {}).get("organization"), ("Organization",))))
    return found


def declared_issues(resource: dict[str, Any]) -> list[str]:
    """What is wrong with the attribution a submitted response declares (each extension at most once, a
    valueReference of its types): said clearly instead of being ignored, since a report would count the session
    under no one."""
    problems = []
    for url, types in ((CLINICIAN, CLINICIAN_TYPES), (PROGRAM, ("Organization",))):
        found = [e for e in resource.get("extension") or () if isinstance(e, dict) and e.get("url") == url]
        name = url.rsplit("/", 1)[1]
        if len(found) > 1:
            problems.append(f"{name} is given {len(found)} times; a session has one")
        elif found and reference(found[0].get("valueReference"), types) is None:
            problems.append(f"{name} must be a valueReference to {' or '.join(types)}/[id]")
    return problems

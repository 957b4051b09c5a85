"""The scoring pipeline: a stored QuestionnaireResponse becomes Observations, Flags and a Provenance, inside the
same write transaction as the response itself (so either all of it is committed or none of it).

History-aware rules read the client's earlier results through scoring's own interface (``history.ScoringSession``:
one rater series' newest results, its first and its active Flags, each an index range), which store/ implements;
the pipeline never sees SQL or the store's write session type.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fhir_server import fhirjson
from fhir_server.canonical import FLAGS_CODESYSTEM, MEASURES_CODESYSTEM, SCORED_AT_SOURCE, WRITE_BACK_TAG
from fhir_server.errors import FhirError
from fhir_server.scoring import attribution, concordance
from fhir_server.scoring import resources as build
from fhir_server.scoring.ages import age_band, age_notes
from fhir_server.scoring.flag_state import close_flag, end_flag
from fhir_server.scoring.flags import TherapySession, cutoff_of, evaluate_flags, interpretations, window_depth
from fhir_server.scoring.history import ScoringContext, ScoringRead, ScoringSession
from fhir_server.scoring.rules import ScoringRules
from fhir_server.scoring.scores import answers_by_link_id, compute_scores, item_scores
from fhir_server.scoring.settings import ScoringSettings
from fhir_server.search.fhirdate import parse_instant
from fhir_server.store.records import Stored, instant

if TYPE_CHECKING:
    from fhir_server.library import Library

SCORED_STATUSES = ("completed", "amended")
SCORED_ELSEWHERE = (
    "This response was scored where it was collected (tag scored-at-source); its Observations and Flags are written "
    "with it, so it was not scored again here."
)


def scored_at_source(response: dict[str, Any]) -> bool:
    meta = response.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return any(
        isinstance(t, dict) and t.get("system") == WRITE_BACK_TAG and t.get("code") == SCORED_AT_SOURCE
        for t in (tags if isinstance(tags, list) else [])
    )


@dataclass(frozen=True)
class Scored:
    """What scoring one response wrote, and notes for whoever submitted it (a form outside its ages)."""

    written: list[Stored]
    notes: tuple[str, ...] = ()


class ScoringPipeline:
    def __init__(self, library: Library, overrides: dict[str, Any] | None = None) -> None:
        self.library = library
        # Checked against every loaded instrument's declared settings: a wrong override stops the server here.
        self.settings = ScoringSettings(overrides, (i.rules for i in library.instruments if i.rules is not None))
        self._device_known = False
        self.pairings = concordance.pairings(i.rules for i in library.instruments if i.rules is not None)

    def rules_for(self, response: dict[str, Any]) -> ScoringRules | None:
        url = str(response.get("questionnaire", "")).partition("|")[0]
        rules = self.library.rules_for(url)
        return rules if rules is not None and rules.scores else None

    def on_written(
        self,
        session: ScoringSession,
        stored: Stored,
        questionnaire: dict[str, Any],
        *,
        fresh: bool = False,
        trusted: bool = True,
    ) -> Scored:
        """Score (or retract) after a QuestionnaireResponse write.  ``fresh``: the response was just created, so
        none of its results can exist yet (no look-ups before writing them).  ``trusted``: the writer may say the
        response was scored where it was collected (another instance's write-back; its results arrive with it)."""
        response = fhirjson.loads_stored(stored.content or "{}")
        rules = self.rules_for(response)
        if rules is None:
            return Scored([])
        if trusted and scored_at_source(response):
            return Scored([], (SCORED_ELSEWHERE,))
        if response.get("status") in SCORED_STATUSES:
            return self.score(session, rules, response, questionnaire, fresh=fresh)
        if response.get("status") == "entered-in-error":
            return Scored(self.retract(session, rules, response))
        return Scored([])

    # -- scoring ------------------------------------------------------------------------------------------
    def results(
        self, session: ScoringSession, rules: ScoringRules, response: dict[str, Any], questionnaire: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Stored], list[str]]:
        """(Observations, Flags for this response, earlier active Flags of the same rules and rater this
        response closes, notes), not written.  Everything history-aware stays within the response's rater series:
        another person's rating never compares with, raises or closes the client's own."""
        scores = compute_scores(rules, response, questionnaire)
        items = item_scores(rules, response, questionnaire)
        series = respondent_series(response, rules)
        context = self._context(session, rules, response, series)
        history = _sessions(rules, response, series, context.history)
        birth_date, authored = _birth_date(context.patient), response.get("authored")
        band = age_band(birth_date, authored)
        notes = age_notes(rules, self.settings, birth_date, authored)
        interpreted = {
            s.id: interpretations(rules, s.id, scores[s.id], history, band, self.settings)  # type: ignore[arg-type]
            for s in rules.scores
            if scores.get(s.id) is not None
        }
        status = "amended" if response.get("status") == "amended" else "final"
        cutoffs = {s.id: c for s in rules.scores if (c := cutoff_of(rules, s.id, band, self.settings)) is not None}
        observations = build.observations(
            rules, response, build.Scoring(scores, items, interpreted, series, status, cutoffs, notes)
        )
        raised = evaluate_flags(rules, scores, items, history, band, self.settings, series)
        flags = [build.flag(response, rules, r, series) for r in raised]
        # Who and where, resolved now and kept with the results: a clinician's later move does not rewrite them.
        stamp = attribution.resolve(response, lambda ref: _read_local(session, ref)).extensions()
        for result in (*observations, *flags):
            if stamp:
                result["extension"] = [*result.get("extension", ()), *stamp]
        # An amended response re-states an earlier session: it does not speak for the client's present.
        ended = [] if status == "amended" else _earlier_active(rules, response, series, context.active_flags)
        return observations, flags, ended, notes

    def score(
        self,
        session: ScoringSession,
        rules: ScoringRules,
        response: dict[str, Any],
        questionnaire: dict[str, Any],
        *,
        fresh: bool = False,
    ) -> Scored:
        observations, flags, ended_earlier, notes = self.results(session, rules, response, questionnaire)
        if not observations:
            # validate_response refuses an unscorable response before it is written (validation/scorable.py);
            # should one get here all the same, failing rolls the write back rather than store it unscored.
            raise FhirError(
                422, "invariant", "QuestionnaireResponse: the scoring rules give no score for this completed response"
            )
        self._ensure_engine_device(session)
        put = self._create if fresh else self._put
        written = [put(session, o) for o in observations]
        raised_ids = {f["id"] for f in flags}
        written += [put(session, f) for f in flags]
        if not fresh:
            # A re-scored (amended) response may no longer raise what it raised before: those Flags end now.
            for rule in rules.flags:
                flag_id = build.derived_id(response["id"], rule.id)
                if flag_id not in raised_ids:
                    ended = end_flag(session, flag_id, response.get("authored"))
                    if ended:
                        written.append(ended)
        # Resolved (the rule no longer holds) or superseded (today's Flag of the same rule replaces it): one
        # active Flag per rule, rater and client.  Read by this transaction: the write checks the version.
        for current in ended_earlier:
            ended = close_flag(session, current, response.get("authored"))
            if ended:
                written.append(ended)
        pairing = self.pairings.get(rules.questionnaire)
        if pairing is not None:  # the therapist's rating beside the client's (scoring/concordance.py)
            written += concordance.pair(session, pairing, response, observations, self.settings)
        targets = [f"{s.resource_type}/{s.id}" for s in written]
        activity = "UPDATE" if response.get("status") == "amended" else "CREATE"
        written.append(put(session, build.provenance(response, targets, instant(session.now), activity)))
        return Scored(written, tuple(notes))

    def retract(self, session: ScoringSession, rules: ScoringRules, response: dict[str, Any]) -> list[Stored]:
        """entered-in-error: the response's Observations and Flags are marked entered-in-error too, and the
        earlier Flags its scoring closed open again when it was the series' latest session (its evidence is void:
        a retracted session must not silently end the client's concern)."""
        closed = self._closed_by(session, response)  # read before the NULLIFY Provenance replaces the record
        written = []
        ids = [("Observation", build.derived_id(response["id"], s.id)) for s in rules.scores]
        ids += [("Flag", build.derived_id(response["id"], r.id)) for r in rules.flags]
        for resource_type, resource_id in ids:
            current = session.current(resource_type, resource_id)
            if current is None or current.deleted:
                continue
            resource = fhirjson.loads_stored(current.content or "{}")
            resource["status"] = "entered-in-error"
            written.append(self._put(session, resource))
        written += self._reopen(session, rules, response, closed)
        pairing = self.pairings.get(rules.questionnaire)
        if pairing is not None:
            written += concordance.retract(session, pairing, response)
        if written:
            targets = [f"{s.resource_type}/{s.id}" for s in written]
            written.append(self._put(session, build.provenance(response, targets, instant(session.now), "NULLIFY")))
        return written

    @staticmethod
    def _closed_by(session: ScoringSession, response: dict[str, Any]) -> list[str]:
        """Flags of earlier sessions that this response's scoring closed (its Provenance's targets)."""
        current = session.current("Provenance", build.derived_id(response["id"], "scoring"))
        if current is None or current.deleted:
            return []
        own = f"{response['id']}-"
        targets = [t.get("reference", "") for t in fhirjson.loads_values(current.content or "{}").get("target", [])]
        return [t[5:] for t in targets if t.startswith("Flag/") and not t[5:].startswith(own)]

    def _reopen(
        self, session: ScoringSession, rules: ScoringRules, response: dict[str, Any], ids: list[str]
    ) -> list[Stored]:
        series, authored = respondent_series(response, rules), response.get("authored")
        read = self._read_for(rules, {**response, "authored": "9999-12-31T00:00:00Z"}, series) if ids else None
        if read is None:
            return []
        context = session.scoring_context(*read)  # sees this transaction's retraction (flushed first)
        if any(_later(stored, response) for stored in context.history):
            return []  # a later session of the series has spoken since: its state stands
        open_codes = {build.flag_code(fhirjson.loads_values(s.content or "{}")) for s in context.active_flags}
        reopened = []
        for flag_id in ids:
            current = session.current("Flag", flag_id, lock=True)
            flag = fhirjson.loads_stored(current.content or "{}") if current and not current.deleted else {}
            ended_here = (flag.get("period") or {}).get("end") == authored
            acknowledged = any(e.get("url") == build.ACKNOWLEDGED for e in flag.get("extension", []))
            if (
                flag.get("status") != "inactive"
                or not ended_here
                or acknowledged
                or build.flag_code(flag) in open_codes
            ):
                continue
            flag["status"] = "active"
            flag["period"] = {k: v for k, v in flag["period"].items() if k != "end"}
            reopened.append(session.rewrite(current, flag).stored)  # type: ignore[arg-type]
            open_codes.add(build.flag_code(flag))
        return reopened

    # -- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _put(session: ScoringSession, resource: dict[str, Any]) -> Stored:
        return session.update(resource, resource["id"], skip_unchanged=True).stored

    @staticmethod
    def _create(session: ScoringSession, resource: dict[str, Any]) -> Stored:
        return session.create(resource, resource["id"]).stored

    def _ensure_engine_device(self, session: ScoringSession) -> None:
        if self._device_known:
            return
        if session.current("Device", build.ENGINE_DEVICE_ID) is None:
            device = build.engine_device()
            session.update(device, device["id"])
        else:  # once it is committed it stays: no need to look again in this process
            self._device_known = True

    def _context(
        self, session: ScoringSession, rules: ScoringRules, response: dict[str, Any], series: str
    ) -> ScoringContext:
        read = self._read_for(rules, response, series)
        return ScoringContext([], [], None) if read is None else session.scoring_context(*read)

    def scoring_read(self, response: dict[str, Any]) -> ScoringRead | None:
        """What scoring ``response`` will read, to be asked ahead (with the replay check); None when it will not
        read anything."""
        rules = self.rules_for(response)
        if rules is None or response.get("status") not in SCORED_STATUSES:
            return None
        return self._read_for(rules, response, respondent_series(response, rules))

    def _read_for(self, rules: ScoringRules, response: dict[str, Any], series: str) -> ScoringRead | None:
        """Everything scoring reads, in one round trip, none of it growing with the client's history: this rater
        series' newest results of the instrument (as many as the rules' windows need) and its first (intake),
        its active Flags with this instrument's codes (at most one per rule) and, when age matters, the
        Patient."""
        subject = _local_subject(response)
        if subject is None:
            return None
        primary = rules.primary
        measure = None
        if primary is not None and response.get("authored"):
            try:
                before = parse_instant(response["authored"])
                # One more than the windows: an amended response's own earlier result may be among the newest.
                depth = window_depth(rules, self.settings) + 1
                measure = (MEASURES_CODESYSTEM, primary.code, series, before, depth, _measured_from_intake(rules))
            except ValueError:
                pass
        codes = sorted({rule.code for rule in rules.flags})
        flags = (FLAGS_CODESYSTEM, codes, series) if codes else None
        aged = rules.ages is not None or self.settings.uses_age_bands(rules)
        patient = subject[1] if subject[0] == "Patient" and aged else None
        if measure is None and flags is None and patient is None:
            return None
        return subject, measure, flags, patient


def _measured_from_intake(rules: ScoringRules) -> bool:
    """Does a rule compare with the series' first session (the SRS's do not: they look at the last few)?"""
    return any(r.kind == "change-from-first" for r in rules.flags) or any(
        i.kind == "reliable-change" for i in rules.interpretations
    )


def _sessions(
    rules: ScoringRules, response: dict[str, Any], series: str, earlier: list[Stored]
) -> list[TherapySession]:
    """The series' earlier sessions of this instrument, newest first (the read asked for this series only; the
    check here keeps a rule from ever comparing across raters, whatever the read returned)."""
    primary = rules.primary
    if primary is None:
        return []
    by_code = {s.code: s.id for s in rules.scores}
    sessions = []
    for stored in earlier:
        observation = fhirjson.loads_values(stored.content or "{}")  # read for its numbers, not written back
        if observation.get("status") == "entered-in-error":
            continue
        if build.series_of(observation) != series or _derived_from(observation) == response.get("id"):
            continue
        scores = {primary.id: Decimal(str(observation["valueQuantity"]["value"]))}
        for component in observation.get("component", []):
            code = component["code"]["coding"][0]["code"]
            if code in by_code and "valueQuantity" in component:
                scores[by_code[code]] = Decimal(str(component["valueQuantity"]["value"]))
        sessions.append(TherapySession(observation.get("effectiveDateTime", ""), scores))
    return sessions


def _earlier_active(rules: ScoringRules, response: dict[str, Any], series: str, active: list[Stored]) -> list[Stored]:
    """Active Flags from earlier sessions of this series with one of the instrument's rule codes: today's
    session either resolves them (the rule no longer holds) or supersedes them (today's Flag takes over)."""
    codes = {rule.code for rule in rules.flags}
    own_prefix = f"{response['id']}-"
    found = []
    for stored in active:
        if stored.id.startswith(own_prefix):
            continue
        flag = fhirjson.loads_values(stored.content or "{}")  # its codes; close_flag reads it again to write it
        if build.series_of(flag) != series:
            continue
        if build.flag_code(flag) in codes:
            found.append(stored)
    return found


def _later(stored: Stored, response: dict[str, Any]) -> bool:
    """Is this result of another response of the series effective after ``response`` was authored?"""
    observation = fhirjson.loads_values(stored.content or "{}")
    if _derived_from(observation) == response["id"]:
        return False
    try:
        return parse_instant(observation.get("effectiveDateTime", "")) > parse_instant(response.get("authored", ""))
    except ValueError:
        return True  # undated: keep the later state rather than reopen on a guess


def _birth_date(patient: Stored | None) -> str | None:
    if patient is None or patient.deleted:
        return None
    return fhirjson.loads_stored(patient.content or "{}").get("birthDate")


def _local_subject(response: dict[str, Any]) -> tuple[str, str] | None:
    reference = (response.get("subject") or {}).get("reference", "")
    parts = reference.split("/")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def respondent_series(response: dict[str, Any], rules: ScoringRules) -> str:
    """Responses by another person (ORS "who is filling out this form") form their own series, and a clinician's
    ratings theirs."""
    if rules.rater == "clinician":
        return concordance.CLINICIAN
    answers = answers_by_link_id(response)
    who = next((a.get("valueCoding", {}).get("code") for a in answers.get("respondent", [])), None)
    if who != "other":
        return "self"
    relation = next((a.get("valueString") for a in answers.get("respondent-relationship", [])), "")
    return f"other:{(relation or '').strip().casefold()}"


def _derived_from(observation: dict[str, Any]) -> str | None:
    for reference in observation.get("derivedFrom", []):
        ref = reference.get("reference", "")
        if ref.startswith("QuestionnaireResponse/"):
            return ref.split("/", 1)[1]
    return None


def _read_local(session: ScoringSession, ref: str) -> dict[str, Any] | None:
    """``Type/id`` in this server's store, as the scoring transaction sees it (None when absent or deleted)."""
    kind, _, resource_id = ref.partition("/")
    stored = session.peek(kind, resource_id)
    return None if stored is None or stored.deleted else fhirjson.loads_stored(stored.content or "{}")

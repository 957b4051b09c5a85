"""The form's work behind the HTTP handlers: which Questionnaire a session shows, drafts, and the submission that
turns answers into a QuestionnaireResponse — validated, stored and scored in one transaction, together with the
session's "submitted" mark and whatever ``after_submission`` adds (the EHR write-back outbox row).

The session is the authority: the response is created through the unguarded interactions, with subject and
encounter from the launch context, never from the browser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_server import fhirjson
from fhir_server.canonical import BASE
from fhir_server.engine.interactions import Interactions
from fhir_server.errors import FhirError
from fhir_server.library import translations
from fhir_server.scoring import attribution
from fhir_server.smart.calculated import with_calculated
from fhir_server.smart.ehr_reads import read_from_ehr
from fhir_server.smart.form_model import (
    Form,
    build_form,
    enabled_answers,
    missing_required,
    read_answers,
    read_draft,
    response_items,
)
from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.store.records import instant, utc_now
from fhir_server.store.repository import WriteSession

SUBMISSION_SYSTEM = f"{BASE}/app-submission"
EHR_READ_SECONDS = 3.0  # each read of the session's Encounter (and its role or episode) at the EHR
# The project's convention for "who is filling it in" (ORS, CORS; the scoring's respondent series reads the same).
RESPONDENT, RELATIONSHIP = "respondent", "respondent-relationship"

# app.state.after_submission(session, write, response): runs inside the transaction that stored the response (and
# only when this call stored it, not for a replay).  It must write only through ``write`` (its rows commit or roll
# back with the response) and may run again if the database retries the transaction after a conflict.
AfterSubmission = Callable[[AppSession, WriteSession, dict[str, Any]], None]


class MeasureUnavailable(Exception):
    """The session names no measure, or one this server does not know."""


class NoRater(Exception):
    """A clinician-rated form (the therapist's rating) without a signed-in clinician: the EHR named no fhirUser
    that is a Practitioner, so the rating could not be recorded as anyone's."""


@dataclass
class Submitted:
    response_id: str | None = None
    errors: dict[str, str] = field(default_factory=dict)  # linkId → message; the form is shown again
    answers: dict[str, Any] = field(default_factory=dict)


def submission_identifier(session: AppSession, canonical: str) -> dict[str, str]:
    """Unique per launch and measure, and the same for every retry of it: the server's identifier replay
    protection (a unique conditional key) then answers a double tap with the response already stored."""
    digest = hashlib.sha256(f"{session.submission_key}|{canonical}".encode()).hexdigest()[:40]
    return {"system": SUBMISSION_SYSTEM, "value": digest}


def _respondent(form: Form, answers: Mapping[str, Any], patient: str) -> dict[str, Any]:
    """QuestionnaireResponse.source: the client, or the other person by the relationship they gave (no
    RelatedPerson resource is created for a one-line answer; the relationship is also an item answer)."""
    items = form.by_link_id()
    if RESPONDENT in items and answers.get(RESPONDENT) == "other":
        relationship = str(answers.get(RELATIONSHIP) or "").strip()
        return {"type": "RelatedPerson", "display": relationship or "Another person"}
    return {"reference": f"Patient/{patient}"}


def rater_reference(fhir_user: str | None) -> str | None:
    """The clinician a signed-in user's fhirUser names, as scoring records clinicians (``Practitioner/x``, the
    EHR's id kept from an absolute URL: scoring/attribution.py); None for a user who is no clinician."""
    return attribution.reference(fhir_user, attribution.CLINICIAN_TYPES) if fhir_user else None


def build_response(
    form: Form, session: AppSession, answers: Mapping[str, Any], *, clinician: str | None = None
) -> dict[str, Any]:
    """``clinician``: for a clinician-rated instrument, the signed-in clinician, its author and source (scoring
    names them the performer of its results, and of the session's gap)."""
    if not session.patient:
        raise MeasureUnavailable("the session has no patient")
    who = {"reference": clinician} if clinician else _respondent(form, answers, session.patient)
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": submission_identifier(session, form.canonical),
        "questionnaire": form.canonical,
        "status": "completed",
        # The language the client read the form in: a rating given in French was given to French wording.
        "language": form.language,
        "subject": {"reference": f"Patient/{session.patient}"},
    }
    if session.encounter:
        response["encounter"] = {"reference": f"Encounter/{session.encounter}"}
    response.update({"authored": instant(utc_now()), "author": who, "source": who})
    response["item"] = response_items(form, answers)
    # The scores as an SDC renderer writes them (the client never enters them): the EHR sees the total.
    response["item"] = with_calculated(form.questionnaire, response)
    return response


class FormService:
    def __init__(self, fhir: Interactions, sessions: AppSessionStore) -> None:
        self.fhir = fhir
        self.sessions = sessions
        # A published url|version never changes, so neither do its translations: both are cached for good.
        self._questionnaires: dict[str, dict[str, Any]] = {}
        self._forms: dict[tuple[str, str], Form] = {}  # (canonical, language shown) → form

    def resolve_measure(self, measure: str) -> str:
        """``srs`` (a library folder), a url or ``url|version`` → the canonical the form shows (a url alone
        means the library's preferred version: a loaded content pack's licensed wording, else the shipped one)."""
        library = self.fhir.library
        url, _, version = measure.partition("|")
        instrument = next((i for i in library.instruments if i.id == url), None)
        url = instrument.url if instrument else url
        version = version or library.preferred_version(url) or ""
        if not version:
            raise MeasureUnavailable(f"no measure {measure[:100]!r} is known here")
        return f"{url}|{version}"

    def form_for(self, session: AppSession, language: str | None = None) -> Form:
        """The session's form in ``language``, else the session's language, else the Questionnaire's own (a
        language the Questionnaire does not offer gives its own: form_model.build_form)."""
        canonical = session.questionnaire
        if not canonical:
            raise MeasureUnavailable("no measure has been chosen for this session")
        questionnaire = self._questionnaires.get(canonical)
        if questionnaire is None:
            url, _, version = canonical.partition("|")
            questionnaire = self.fhir.library.questionnaire(url, version)
            if questionnaire is None:
                try:
                    questionnaire = self.fhir.resolve_questionnaire(None, canonical)
                except FhirError:
                    raise MeasureUnavailable(f"the measure {canonical[:200]} is not known here") from None
            self._questionnaires[canonical] = questionnaire
        # Keyed by the language shown, not the one asked for: any tag a browser sends maps to one the form offers.
        key = (canonical, translations.match(questionnaire, language or session.language))
        if key not in self._forms:
            self._forms[key] = build_form(questionnaire, key[1])
        return self._forms[key]

    def clinician_rated(self, session: AppSession) -> bool:
        """Whether the session's measure is rated by the clinician (scoring.json ``"rater": "clinician"``)."""
        rules = self.fhir.library.rules_for((session.questionnaire or "").partition("|")[0])
        return rules is not None and rules.rater == "clinician"

    def attribution(self, session: AppSession, response: dict[str, Any]) -> attribution.Attribution:
        """The clinician and program of the session, from what the launch gave (scoring/attribution.py): read at
        the EHR with the launch's token, or here for a session started on this server (the sandbox).  Before the
        write transaction: an EHR that does not answer costs the client a few seconds, never the submission."""
        if session.launch_iss and session.access_token:
            iss, token = session.launch_iss, session.access_token

            def read(ref: str) -> dict[str, Any] | None:
                return read_from_ehr(iss, token, ref, timeout=EHR_READ_SECONDS)
        else:

            def read(ref: str) -> dict[str, Any] | None:
                kind, _, resource_id = ref.partition("/")
                stored = self.fhir.repo.read(kind, resource_id)
                return fhirjson.loads_stored(stored.content or "{}") if stored and not stored.deleted else None

        return attribution.resolve(response, read, context=session.fhir_context, user=session.fhir_user)

    def save_draft(self, session: AppSession, draft: Any) -> bool:
        """ValueError for a draft the form cannot take; False when the session was submitted meanwhile."""
        if not isinstance(draft, dict):
            raise ValueError("the draft must be an object of answers by linkId")
        return self.sessions.save_draft(session, read_draft(self.form_for(session), draft))

    def submit(
        self, session: AppSession, fields: Mapping[str, Any], after_submission: AfterSubmission | None
    ) -> Submitted:
        if session.submitted:  # a replayed POST after success: the same answer, nothing written
            return Submitted(response_id=session.response_id)
        form = self.form_for(session)
        answers, errors = read_answers(form, fields)
        answers = enabled_answers(form, answers)
        errors = {**missing_required(form, answers), **errors}
        if errors:
            return Submitted(errors=errors, answers=answers)
        clinician = None
        if self.clinician_rated(session):
            clinician = rater_reference(session.fhir_user)
            if clinician is None:
                raise NoRater
        response = build_response(form, session, answers, clinician=clinician)
        stamp = self.attribution(session, response).extensions()
        if stamp:
            response["extension"] = stamp

        def work(write: WriteSession) -> str:
            result = self.fhir.create(write, "QuestionnaireResponse", response)
            self.sessions.mark_submitted(session, result.stored.id, write)
            if not result.existing and after_submission is not None:
                after_submission(session, write, fhirjson.loads_stored(result.stored.content or "{}"))
            return result.stored.id

        return Submitted(response_id=self.fhir.repo.write(work))

"""The therapist's rating of a session (issue 21) as the app opens it: from the clinician's pages ("Before you see
today's rating: how do you think it went for your client?"), or launched by the EHR with ``view=therapist-rating``.
Either way it is the rating form (smart/submission.py) with the library's clinician-rated instrument, for the
launch's patient and the session's Encounter, authored by the signed-in clinician; once sent, the app goes on to
the clinician view, where the client's rating of that session now shows.

From the clinician's pages it opens in an app session of its own: a session holds one submitted form, and the
launch's may already hold the client's (the result page after the hand-back).  The new session takes the launch's
context and access token, never its refresh token (good once: it stays with the launch, whose token the write-back
of the client's rating may still use).
"""

from __future__ import annotations

from fhir_server.smart.sessions import AppSession, AppSessionStore
from fhir_server.smart.submission import rater_reference

THERAPIST_RATING = "therapist-rating"  # the app view (launch URL ``view=``, AppSession.app_view)
AFTER = "/app/clinician"  # where a sent rating goes: the view, showing what it waited for

# (title, text) of the pages that say why the form cannot open
NO_RATER = (
    "Who is rating?",
    "The EHR did not say which clinician is signed in, so this rating could not be recorded as yours. Please open "
    "it again from the EHR.",
)
NO_SESSION = (
    "No session to rate",
    "Your rating is set beside your client's by the session (the EHR's Encounter), and none was named. Please open "
    "it from the session in the EHR.",
)

# What a rating's session takes from the launch; not the refresh token, the draft, the submission or the state of
# the launch itself.
_COPIED = (
    "launch_iss",
    "ehr_id",
    "access_token",
    "token_expires_at",
    "scope",
    "patient",
    "fhir_user",
    "fhir_context",
    "need_patient_banner",
    "smart_style_url",
)


def refusal(session: AppSession, *, encounter: str | None) -> tuple[str, str] | None:
    """Why the therapist's form cannot open for this session (no clinician signed in, no session to pair the
    rating with), or None."""
    if rater_reference(session.fhir_user) is None:
        return NO_RATER
    if not encounter:
        return NO_SESSION
    return None


def open_rating(sessions: AppSessionStore, launched: AppSession, questionnaire: str, encounter: str) -> str:
    """A new app session for the therapist's form of ``questionnaire`` (a canonical) for the launch's patient and
    the session ``encounter``; returns its id for the cookie."""
    values = {name: getattr(launched, name) for name in _COPIED}
    session_id, _ = sessions.create_session(
        **values, encounter=encounter, questionnaire=questionnaire, app_view=THERAPIST_RATING
    )
    return session_id

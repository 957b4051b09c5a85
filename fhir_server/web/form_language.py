"""Which language the rating form speaks for a session, and the form's texts that come from code.

The order (fhir_server/i18n/negotiation.py): the client's choice on the form's switch, else the launch's locale —
both kept in ``AppSession.language``, the switch overwriting the launch's — else the Patient's preferred
``communication``, else ``Accept-Language``, else English; among the languages both the app's catalogue and the
Questionnaire offer.  The outcome is stored in the session the first time the form shows, so the drafts, the
submission (its QuestionnaireResponse.language) and every later page of the session speak the language the client
saw, and the Patient is read once per session, not per page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request

from fhir_server import fhirjson
from fhir_server.i18n import SOURCE_LANGUAGE, app_texts, direction, display_name, negotiate, patient_languages
from fhir_server.i18n.negotiation import best
from fhir_server.smart.ehr_reads import read_from_ehr
from fhir_server.smart.form_model import Form
from fhir_server.smart.sessions import AppSession
from fhir_server.web.form_pages import page_templates

log = logging.getLogger("fhir_server.app")
PATIENT_READ_SECONDS = 3.0  # the EHR's Patient, once per session: a slow EHR costs the first page this much at most
_UNUSABLE = re.compile(r"This answer could not be used \((.+)\)\.")


def offered(form: Form) -> list[str]:
    """The languages the Questionnaire is available in (``Form.languages``; a form model without it offers the
    Questionnaire's own language)."""
    languages = getattr(form, "languages", None)
    if languages:
        return list(languages)
    return [form.questionnaire.get("language") or SOURCE_LANGUAGE]


def available(request: Request, form: Form) -> list[str]:
    """The app catalogue's languages that the Questionnaire offers too (``fr-CA`` offered serves ``fr``)."""
    tags = offered(form)
    app_languages = page_templates(request).catalogues.languages
    return [language for language in app_languages if any(best(tag, [language]) for tag in tags)]


def _patient(request: Request, session: AppSession) -> dict[str, Any] | None:
    stored = request.app.state.fhir.repo.read("Patient", session.patient or "")
    if stored is not None and not stored.deleted:
        return fhirjson.loads_stored(stored.content or "{}")
    if session.launch_iss and session.access_token:
        return read_from_ehr(
            session.launch_iss, session.access_token, f"Patient/{session.patient}", timeout=PATIENT_READ_SECONDS
        )
    return None


def patient_preferences(request: Request, session: AppSession) -> list[str]:
    """``Patient.communication`` of the session's client, preferred first; nothing when it cannot be read (the
    choice falls through to the browser's languages)."""
    if not session.patient:
        return []
    try:
        return patient_languages(_patient(request, session))
    except Exception:  # best effort: a broken Patient or store must not keep the form from showing
        log.warning("the Patient's languages could not be read; the browser's are used")
        return []


def choose(request: Request, session: AppSession, form: Form) -> str:
    """The form's language for this session (blocking: may read the Patient; run in the thread pool)."""
    languages = available(request, form)
    if best(session.language, languages):
        return best(session.language, languages) or SOURCE_LANGUAGE
    return negotiate(
        languages,
        patient=patient_preferences(request, session),
        accept=request.headers.get("accept-language"),
    )


def switch(request: Request, form: Form, current: str) -> list[dict[str, Any]]:
    """The language switch's entries: each language in its own name, the current one marked."""
    return [
        {"code": code, "name": display_name(code), "dir": direction(code), "current": code == current}
        for code in available(request, form)
    ]


def message_of(gettext: Callable[[str], str], text: str) -> str:
    """A message the form model wrote in English (a required item, an answer it could not read), translated."""
    unusable = _UNUSABLE.fullmatch(text)
    if unusable:
        return gettext(app_texts.UNUSABLE) % {"reason": gettext(unusable.group(1))}
    return gettext(text)


def script_texts(request: Request, language: str, form: Form) -> dict[str, Any]:
    """What form.js says, in the page's language (a JSON block: the script holds no text of its own).  The
    count of questions still unanswered is written out for every possible count, so each language's plural rules
    are the catalogue's, not the script's."""
    translations = page_templates(request).translator(language)
    gettext, ngettext = translations.gettext, translations.ngettext
    answerable = sum(1 for _ in form.by_link_id())
    missing = {
        str(count): ngettext(
            "One question still needs an answer. It is marked above.",
            "%(num)d questions still need an answer. They are marked above.",
            count,
        )
        % {"num": count}
        for count in range(1, answerable + 1)
    }
    return {
        "unmarked": gettext("Not marked yet"),
        # the script fills {value} and {maximum} in
        "valueText": gettext("%(value)s out of %(maximum)s") % {"value": "{value}", "maximum": "{maximum}"},
        "sending": gettext("Sending…"),
        "missing": missing,
    }

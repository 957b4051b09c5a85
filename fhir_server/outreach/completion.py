"""A submitted form closes the requests it answers, in the transaction that stores the response (the form's
``after_submission``): the Task a link opened the form for, or — for a form filled in an EHR launch — every open
request of that client for that measure, so a measure done in session stops the reminders for it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fhir_server.measure_tasks.tasks import MeasureTasks, TaskRefused
from fhir_server.smart.sessions import AppSession
from fhir_server.store.repository import WriteSession

log = logging.getLogger("fhir_server.outreach")
AfterSubmission = Callable[[AppSession, WriteSession, dict[str, Any]], None]


def close_requests(tasks: MeasureTasks) -> AfterSubmission:
    def after_submission(session: AppSession, write: WriteSession, response: dict[str, Any]) -> None:
        reference = f"QuestionnaireResponse/{response['id']}"
        if session.task_id:
            try:
                tasks.complete(write, session.task_id, reference)
            except TaskRefused as exc:
                # Cancelled or expired while the client was answering: their answers are kept all the same.
                log.warning("a linked form's Task was not closed: %s", exc)
        elif session.patient and response.get("questionnaire"):
            tasks.close_open_for(write, session.patient, str(response["questionnaire"]), reference)

    return after_submission


def in_order(*hooks: AfterSubmission | None) -> AfterSubmission:
    """Several after-submission hooks, run one after the other in the same transaction."""
    chosen: Sequence[AfterSubmission] = [hook for hook in hooks if hook is not None]

    def after_submission(session: AppSession, write: WriteSession, response: dict[str, Any]) -> None:
        for hook in chosen:
            hook(session, write, response)

    return after_submission

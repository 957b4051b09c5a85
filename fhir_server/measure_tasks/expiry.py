"""The expiry sweep: open requests whose expiry has passed are cancelled.

Why ``cancelled``: R4's task-status has no ``expired`` (R5 neither); of its end states, ``failed`` says the work was
attempted and went wrong, ``rejected`` that the owner declined, ``entered-in-error`` that it never should have
existed.  A request nobody answered in time was called off by the requester's side, which is ``cancelled``; the
statusReason says why (fit-task-input#expired, "Expired before it was completed"), so a report can tell it from a
clinician's cancel.

Safe with several server processes: candidates are read without a lock, then each is changed in its own write
transaction, under the row's lock and conditional on the version read (If-Match): a Task completed, cancelled or
changed meanwhile by another process or request is left as it is (its newer version wins), and two sweeps cancel it
once.  Call ``expire_due`` from any worker loop (the outreach worker does; it is cheap when nothing is due).
"""

from __future__ import annotations

import logging
from datetime import datetime

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.measure_tasks.tasks import OPEN_QUERY, PAGE, MeasureTasks
from fhir_server.store.records import Stored, instant, utc_now
from fhir_server.store.repository import WriteSession
from fhir_server.validation.sdc_task import FIT_TASK_INPUT, OPEN_STATUSES, expiry

log = logging.getLogger("fhir_server.measure_tasks")
EXPIRED_TEXT = "Expired before it was completed"
EXPIRED_REASON = {
    "coding": [{"system": FIT_TASK_INPUT, "code": "expired", "display": EXPIRED_TEXT}],
    "text": EXPIRED_TEXT,
}
MAX_PAGES = 100  # a sweep reads at most this many pages of open requests (the next sweep goes on)


def expire_due(tasks: MeasureTasks, now: datetime | None = None) -> list[str]:
    """Cancel every open request whose expiry (``restriction.period.end``, else authoredOn + task_days) is at or
    before ``now`` (naive UTC); the ids this call cancelled."""
    at = now or utc_now()
    cancelled = []
    for stored in _due(tasks, at):
        try:
            if tasks.fhir.repo.write(lambda session, s=stored: _expire(tasks, session, s, at)):
                cancelled.append(stored.id)
        except FhirError as refused:  # 412: changed meanwhile (completed, or swept by another process)
            if refused.status != 412:
                raise
    if cancelled:
        log.info("measure requests expired", extra={"count": len(cancelled)})
    return cancelled


def _due(tasks: MeasureTasks, at: datetime) -> list[Stored]:
    """The open requests past their expiry, as read now (outside any write transaction)."""
    params = [*OPEN_QUERY, ("_sort", "authored-on"), ("_count", str(PAGE))]
    query = tasks.fhir.parse_query("Task", params)
    due = []
    for _ in range(MAX_PAGES):
        outcome = tasks.fhir.search(query).outcome
        for stored in outcome.matches:
            when = expiry(fhirjson.loads_stored(stored.content or "{}"), tasks.days)
            if when is not None and when <= at:
                due.append(stored)
        if not outcome.next_cursor:
            break
        query.cursor = outcome.next_cursor
    return due


def _expire(tasks: MeasureTasks, session: WriteSession, read: Stored, at: datetime) -> bool:
    current = session.current("Task", read.id, lock=True)
    if current is None or current.deleted or current.version_id != read.version_id:
        return False  # changed since it was read: that version is not the one found due
    task = fhirjson.loads_stored(current.content or "{}")
    if task.get("status") not in OPEN_STATUSES:
        return False
    task["status"] = "cancelled"
    task["statusReason"] = EXPIRED_REASON
    task["lastModified"] = instant(at)
    tasks.fhir.update(session, "Task", read.id, task, if_match=current.etag)
    return True

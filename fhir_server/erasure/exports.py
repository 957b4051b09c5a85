"""Bulk Data export files an erased patient may be in, removed once the erasure has committed (files are not part
of the transaction): the job goes with them (export/jobs.py ``remove``: its status URL and files then answer 404,
as an expired export's).

- a job started by the patient's own token;
- a finished job (completed or failed) whose files name the patient: the Patient's own line, or a reference to
  it (every resource of the record has one);
- a job running when the erasure committed, unless its token was another patient's: pages it read before the
  commit may hold the patient's data, written after any look at its files.  A job still queued, or one claimed
  after the commit, reads nothing of the patient.
"""

from __future__ import annotations

import re
from datetime import datetime

from fhir_server.export import jobs
from fhir_server.export.storage import ExportStorage
from fhir_server.store.engine import Database

OVERLAP = 256  # bytes kept between chunks, so a name split by a chunk boundary is still found


def remove_for_patient(engine: Database, storage: ExportStorage, patient_id: str, committed_at: datetime) -> int:
    """Remove the export jobs (and files) that may hold the patient; returns how many."""
    escaped = re.escape(patient_id.encode())
    marks = re.compile(
        rb'"resourceType":"Patient","id":"' + escaped + rb'"|Patient/' + escaped + rb"(?![A-Za-z0-9\-.])"
    )
    removed = 0
    for job in jobs.listing(engine):
        patient = job.claims.get("patient")
        if patient == patient_id:
            doomed = True
        elif patient:  # another patient's token reached only that patient's compartment
            doomed = False
        elif job.active:  # its transaction time is when it was first claimed: before its first read
            doomed = job.transaction_time is not None and job.transaction_time <= committed_at
        else:
            doomed = any(_holds(storage, job.id, f["name"], marks) for f in job.files)
        if doomed and jobs.remove(engine, storage, job.id):
            removed += 1
    return removed


def _holds(storage: ExportStorage, job_id: str, name: str, marks: re.Pattern[bytes]) -> bool:
    chunks = storage.read(job_id, name)
    if chunks is None:
        return False
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        if marks.search(window):
            close = getattr(chunks, "close", None)  # the rest unread: let the file go now
            if close is not None:
                close()
            return True
        tail = window[-OVERLAP:]
    return False

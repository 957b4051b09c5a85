"""The expiry sweep as a worker of the server process (``background.py``): every
``FHIR_SERVER_TASK_EXPIRY_POLL_SECONDS`` the open requests past their expiry are cancelled (expiry.py says why
cancelled, and why several processes may sweep at once).  A link's own expiry does not wait for it: the link
refuses at its expiry whatever the sweep did."""

from __future__ import annotations

import logging

from fhir_server.background import BackgroundWorker
from fhir_server.measure_tasks.expiry import expire_due
from fhir_server.measure_tasks.tasks import MeasureTasks

log = logging.getLogger("fhir_server.measure_tasks")


class ExpiryWorker(BackgroundWorker):
    name = "task-expiry"

    def __init__(self, tasks: MeasureTasks, poll_seconds: float) -> None:
        super().__init__(poll_seconds, 10.0, log)
        self.tasks = tasks

    def run_once(self) -> bool:
        cancelled = expire_due(self.tasks)
        if cancelled:
            log.info("%d expired requests cancelled", len(cancelled))
        return False  # one sweep per poll: the next one goes on where a long one stopped

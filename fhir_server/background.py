"""The worker machinery of the server process: a daemon thread that does one unit of durable work at a time (an
EHR outbox row, a Bulk Data export job, a subscription's notification), and sleeps when there is none: until
its next poll, or until a write that queued some has committed and wakes it (``wake``).

The work itself lives in the database, so a thread that dies with its process loses nothing: what it held was
claimed under a lease, and becomes due again when the lease runs out, for this process after a restart or for
another one meanwhile.  Subclasses say what one unit is (``run_once``); this class only runs the loop.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository, WriteSession


class BackgroundWorker(ABC):
    name = "worker"

    def __init__(self, poll_seconds: float, join_seconds: float, log: logging.Logger) -> None:
        self.poll_seconds = poll_seconds
        self.join_seconds = join_seconds  # how long stop() waits for the unit in progress
        self.log = log
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sooner: float | None = None  # a wait shorter than the poll that run_once asked for (come_back_in)
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def come_back_in(self, seconds: float) -> None:
        """Called by ``run_once``: something becomes due in ``seconds``, sooner than the next poll perhaps."""
        self._sooner = seconds if self._sooner is None else min(self._sooner, seconds)

    def wake(self) -> None:
        """There is work now (a write queued some and committed): look at once instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Let the unit in progress finish (or give it back) and end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_seconds)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up during run_once is not lost
            self._sooner = None
            try:
                worked = self.run_once()
            except Exception as exc:  # the database may be down: keep going, say what kind of failure only
                self.log.warning("%s: %s; trying again shortly", self.name, type(exc).__name__)
                worked = False
            if not worked:
                wait = self.poll_seconds if self._sooner is None else max(0.0, min(self.poll_seconds, self._sooner))
                self._wake.wait(wait)

    @abstractmethod
    def run_once(self) -> bool:
        """Do one unit of work; False when there was none (the loop then waits ``poll_seconds``)."""

    @staticmethod
    def claim(
        repo: Repository,
        any_due: Callable[[Any, datetime], bool],
        claim_due: Callable[[WriteSession, datetime, datetime], dict[str, Any] | None],
        lease_seconds: float,
    ) -> dict[str, Any] | None:
        """The next due unit, claimed under a lease of ``lease_seconds``: None when nothing is due or another
        worker took it first.  ``any_due`` is asked outside a write transaction, so an idle poll takes no lock."""
        now = utc_now()
        if not any_due(repo.read_engine, now):
            return None
        lease = now + timedelta(seconds=lease_seconds)
        return repo.write(lambda s: claim_due(s, now, lease))

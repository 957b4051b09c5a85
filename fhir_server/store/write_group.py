"""Group commit for SQLite: the writes of sessions prepared before the writer's turn (Repository.write,
optimistic) are sent in one transaction, each inside its own savepoint.

SQLite has one writer at a time, and each transaction pays for BEGIN IMMEDIATE, the commit and the WAL frames of
every page it changed.  Submissions of the same kind change the same index pages (the ``status`` and ``category``
rows of every Observation land on the same leaves), so a commit of four writes the WAL far less than four commits.
Threads queue their prepared sessions; one of them (the leader) takes every session queued so far and sends them
together; the others wait for it and find theirs done.  A session whose guarded writes meet a conflict is rolled
back to its savepoint alone and its thread runs its work again the ordinary way; a failed commit fails them all.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from fhir_server.store.batch import RetryTransaction
from fhir_server.store.session import WriteSession


@dataclass
class _Entry:
    session: WriteSession
    done: threading.Event = field(default_factory=threading.Event)
    sent: bool = False  # its writes were committed
    error: BaseException | None = None  # raised in its own thread


class WriteGroup:
    def __init__(self, begin: Callable[[contextlib.ExitStack], Connection], after_commit: Callable[[], None]) -> None:
        self._begin = begin
        self._after_commit = after_commit
        self._queued: list[_Entry] = []
        self._queue_lock = threading.Lock()
        self._leading = threading.Lock()

    def send(self, session: WriteSession) -> bool:
        """Commit the session's queued writes; False when they met a conflict (nothing of them was written)."""
        entry = _Entry(session)
        with self._queue_lock:
            self._queued.append(entry)
        with self._leading:  # a leader sends every session queued so far, possibly this one
            led = not entry.done.is_set() and self._lead()
        if led:
            # Housekeeping after a commit (a checkpoint now and then), outside the leading lock: the next leader
            # must not wait for it (measured: ~10 % of the leader's time under load).
            self._after_commit()
        if entry.error is not None:
            raise entry.error
        return entry.sent

    def _lead(self) -> bool:
        """Send the queued sessions in one transaction; whether it committed."""
        with self._queue_lock:
            group, self._queued = self._queued, []
        try:
            with contextlib.ExitStack() as stack:
                conn = self._begin(stack)
                # A savepoint per session, so that a conflict undoes its writes only; on the driver, because the
                # writer's turn is what every writer waits for (SQLAlchemy's nested transactions cost ~0.1 ms here).
                driver = conn.connection.driver_connection
                for entry in group:
                    driver.execute("SAVEPOINT group_entry")
                    try:
                        entry.session.join(conn)
                        entry.session.flush()
                        entry.sent = True
                    except (IntegrityError, sqlite3.IntegrityError, RetryTransaction):
                        entry.sent = False
                    except Exception as exc:
                        entry.error = exc
                    if not entry.sent:
                        driver.execute("ROLLBACK TO group_entry")
                    driver.execute("RELEASE group_entry")
            return True
        except BaseException as exc:  # the commit failed: none of the group was written
            for entry in group:
                if entry.error is None:
                    entry.sent, entry.error = False, exc
            if not isinstance(exc, Exception):
                raise
            return False
        finally:
            for entry in group:
                entry.done.set()

"""SQLite's single writer, as a queue, and its checkpoints kept out of that queue.

One write transaction at a time may hold SQLite's write lock.  SQLite's own waiting (the busy handler) polls with
sleeps of 1 to 100 ms, so the lock sits idle after every release while waiters sleep, and a waiter can starve
past the busy timeout.  Here writers queue instead: threads of one process on a lock, the server's processes
on an ``flock`` of a file beside the database; both wake the next writer the moment the last one is done.

WAL checkpoints (copying committed pages from the ``-wal`` file into the database, then fsync) would otherwise
run inside the commit that crosses SQLite's 1,000-page mark, holding everyone's place in the queue: a scored
submission writes ~250 pages, so that was every fourth commit, ~5 ms each on average.  Here every
``checkpoint_every``-th write of a process runs a PASSIVE checkpoint (it never waits for, nor blocks, readers
and writers) after the writer has left the queue; SQLite's automatic checkpoint stays as a backstop at a higher
mark (``AUTOCHECKPOINT_PAGES``), should these fall behind.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows: one process only (threads still queue)
    fcntl = None  # type: ignore[assignment]

CHECKPOINT_EVERY = 8  # writes; ~2 MB of WAL per process between checkpoints for scored submissions
AUTOCHECKPOINT_PAGES = 10_000  # ~40 MB


class SqliteWriter:
    def __init__(self, database: str | None, *, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self._threads = threading.Lock()
        on_disk = bool(database) and database != ":memory:" and not str(database).startswith("file::memory:")
        self._database = database if on_disk else None
        self._checkpoint_every = checkpoint_every
        self._writes = 0
        self._checkpointing = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointer_pid = 0

    # -- the queue ---------------------------------------------------------------------------------------
    def __enter__(self) -> SqliteWriter:
        self._threads.acquire()
        try:
            fd = self._lock_file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks in the kernel (GIL released) until the holder unlocks
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _lock_file(self) -> int | None:
        if self._database is None or fcntl is None:
            return None
        # An flock belongs to the open file: a descriptor inherited across fork() would be shared with the
        # parent, so each process opens its own.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(f"{self._database}-writer", os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    # -- checkpoints ---------------------------------------------------------------------------------------
    def after_write(self) -> None:
        """Every ``checkpoint_every`` writes, checkpoint; one thread at a time, nobody waits for it."""
        if self._database is None:
            return
        self._writes += 1  # under the GIL; an increment lost to a race only delays a checkpoint
        if self._writes % self._checkpoint_every or not self._checkpointing.acquire(blocking=False):
            return
        try:
            if self._checkpointer is None or self._checkpointer_pid != os.getpid():
                self._checkpointer = sqlite3.connect(self._database, check_same_thread=False, isolation_level=None)
                self._checkpointer_pid = os.getpid()
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            pass  # a checkpoint is housekeeping: a later write tries again
        finally:
            self._checkpointing.release()

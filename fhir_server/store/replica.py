"""Reads from a PostgreSQL streaming replica (FHIR_SERVER_READ_REPLICA_URL), with read-your-writes.

A caller's searches, history, reads and version reads go to the replica (``Repository.for_reader``), except:

- **Read-your-writes.**  After a write for a caller commits, the primary's WAL insert position is remembered for
  that caller (one ~0.15 ms query on the primary's autocommit pool).  The caller's reads go to the replica only
  once the replica's replay position has reached it.  The replay position is polled in the background (every
  POLL_SECONDS), never per request.  A remembered write is forgotten after REMEMBER_SECONDS; a replica more than
  MAX_BEHIND_SECONDS behind serves no one, so a forgotten write can never send its writer to a replica that lacks
  it.  The positions are shared by the server processes of one machine (``WriteMarks``: the workers of ``serve
  --workers N``, whose connections the kernel spreads); another machine's instance does not see them, so behind a
  load balancer read-your-writes holds for a caller that stays on one instance.
- **Outage.**  A replica that does not answer (or is not in recovery: promoted, or a wrong URL) serves no one: the
  primary answers, a warning is logged once per outage, and the replica is tried again after a back-off.  A read
  that fails on the replica is answered by the primary.

How far behind the replica is, for routing: each poll notes the primary's WAL write position with the time; once
the replica has replayed a noted position, it holds every commit made before that time.  (The lag metric,
``now - pg_last_xact_replay_timestamp()``, cannot serve here: after an idle hour, the first write's commit would
make a caught-up replica look an hour behind until it is replayed.)

Everything else (background workers, claims, access checks, audit, the app's own pages) reads the primary: only a
repository view bound to a caller routes, and ``Repository.read_engine`` stays the primary's pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX: the table of writes is shared between processes under record locks
    import fcntl
except ImportError:  # elsewhere each process keeps its own
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fhir_server.config import Settings
from fhir_server.store.engine import build_replica_engine, normalise_url

log = logging.getLogger("fhir_server.replica")

POLL_SECONDS = 0.2  # how often the replay position is read: how soon a writer's reads return to the replica
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)  # waits before trying an unreachable replica again, then 10 s each
REMEMBER_SECONDS = 300.0  # a caller's last write is remembered this long
MAX_BEHIND_SECONDS = 240.0  # a replica further behind serves no one; below REMEMBER_SECONDS by more than a poll
NOT_KNOWN = (1 << 64) - 1  # the position of a write whose WAL position could not be read: no replica reaches it
SLOTS = 1 << 16  # callers' slots in the table of writes (1 MiB): callers sharing one read the primary a bit more
_STATUS_SQL = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)


def replica_problem(database_url: str, replica_url: str) -> str | None:
    """Why this replica setting cannot be served (one line, no URL: it may hold a password), or None."""
    if not replica_url:
        return None
    if not normalise_url(database_url).startswith("postgresql+psycopg://"):
        return (
            "FHIR_SERVER_READ_REPLICA_URL needs a PostgreSQL database: FHIR_SERVER_DATABASE_URL is not one "
            "(a SQLite database has no replicas); unset FHIR_SERVER_READ_REPLICA_URL"
        )
    if not normalise_url(replica_url).startswith("postgresql+psycopg://"):
        return "FHIR_SERVER_READ_REPLICA_URL must be a postgresql:// URL (a streaming replica of the database)"
    return None


def parse_lsn(value: str) -> int:
    """PostgreSQL's ``pg_lsn`` text (``16/B374D848``) as a comparable number."""
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def current_position(primary: Engine) -> int:
    """The primary's WAL insert position now: past the end of every transaction committed before this call, also
    with synchronous_commit off (where the write position might not be yet)."""
    with primary.connect() as conn:
        return parse_lsn(conn.exec_driver_sql("SELECT pg_current_wal_insert_lsn()::text").scalar_one())


def primary_write_position(primary: Engine) -> int:
    """The primary's WAL write position: a replica that has replayed it has nothing left to replay."""
    with primary.connect() as conn:
        return parse_lsn(conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one())


@dataclass(frozen=True)
class ReplicaState:
    """One poll's finding, replaced whole (readers take it without a lock)."""

    up: bool  # answered, in recovery, replaying
    serving: bool  # up and not further behind than MAX_BEHIND_SECONDS
    replay: int  # replayed WAL position (0 when unknown)
    lag_seconds: float | None  # now - last replayed commit's time; 0 when caught up; None when unknown


DOWN = ReplicaState(up=False, serving=False, replay=0, lag_seconds=None)


class WriteMarks:
    """The callers' last write positions, shared by every server process of this machine on the same primary and
    replica: a fixed table in a memory-mapped file (in /dev/shm where there is one), a caller's slot chosen by a
    hash of its name.  Callers whose names share a slot share the highest position, never a lower one, so a
    collision only sends a caller to the primary a little longer.  The file holds positions and times, nothing
    that names anyone; it is this OS user's alone (0600), and removed by the last process to close it.  Without
    it (no POSIX locks, or a file that is not this user's), each process keeps its own table, and says so."""

    _SLOT = struct.Struct("=Qd")  # the highest position, and when it was last raised (time.time())

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()  # POSIX record locks are the process's: threads need their own lock
        size = SLOTS * self._SLOT.size
        user = os.getuid() if hasattr(os, "getuid") else 0
        self.path = _shared_folder() / f"fhir-server-writes-{user}-{name}"
        self._fd = _open_shared(self.path, size)
        self._map = mmap.mmap(self._fd, size) if self._fd is not None else mmap.mmap(-1, size)

    def raise_to(self, reader: str, position: int, now: float) -> None:
        offset = self._offset(reader)
        with self._locked(offset, exclusive=True):
            known, _ = self._SLOT.unpack_from(self._map, offset)
            self._SLOT.pack_into(self._map, offset, max(known, position), now)

    def last(self, reader: str) -> tuple[int, float]:
        """(highest position, when written) of the reader's slot; (0, 0.0) when nobody wrote there."""
        offset = self._offset(reader)
        with self._locked(offset, exclusive=False):
            return self._SLOT.unpack_from(self._map, offset)

    def _offset(self, reader: str) -> int:
        digest = hashlib.blake2b(reader.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % SLOTS * self._SLOT.size

    @contextmanager
    def _locked(self, offset: int, *, exclusive: bool) -> Iterator[None]:
        with self._lock:
            if self._fd is None:
                yield
                return
            fcntl.lockf(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, self._SLOT.size, offset)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, self._SLOT.size, offset)

    def close(self) -> None:
        self._map.close()
        if self._fd is None:
            return
        try:  # every process holds the file shared while it runs: the last one to leave removes it
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # still in use by another process
        os.close(self._fd)


def _shared_folder() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _open_shared(path: Path, size: int) -> int | None:
    """The table file, opened and held shared (flock) for this process's life; None when it cannot be shared."""
    alone = "read replica: %s: read-your-writes holds per server process"
    if fcntl is None:
        log.warning(alone, "no POSIX file locks here")
        return None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            log.warning(alone, f"the table of writes {path} cannot be opened ({type(exc).__name__})")
            return None
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            os.close(fd)  # someone else's file where ours should be: never trust its contents
            log.warning(alone, f"{path} is not this user's own file")
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:  # the last user may have removed it between our open and our lock: then make a new one
            same = os.stat(path).st_ino == info.st_ino
        except FileNotFoundError:
            same = False
        if same:
            if info.st_size < size:
                os.ftruncate(fd, size)
            return fd
        os.close(fd)


class Replica:
    """The replica's engine, its poller thread and the callers' last write positions."""

    def __init__(
        self, engine: Engine, primary: Engine, marks: WriteMarks, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.engine = engine
        self.primary = primary  # the primary's autocommit pool (Repository.read_engine)
        self.marks = marks
        self.poll_seconds = poll_seconds
        self.state = DOWN  # until the first poll: the primary serves
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failures = 0  # consecutive failed polls: the back-off
        # The poller's own: (time, primary's write position) of the polls the replica has not replayed yet, oldest
        # first; and the time of the newest one it has (every commit before it is on the replica), None at first.
        self._positions: deque[tuple[float, int]] = deque(maxlen=4096)
        self._replayed_through: float | None = None
        self._problem: str | None = None  # the outage being reported, so it is logged once
        self._thread = threading.Thread(target=self._run, name="replica-poller", daemon=True)
        self._thread.start()

    # -- routing (request threads) ------------------------------------------------------------------------------
    def serves(self, reader: str) -> bool:
        """Whether this caller's read may go to the replica now."""
        state = self.state
        if not state.serving:
            return False
        position, written_at = self.marks.last(reader)
        return position <= state.replay or written_at + REMEMBER_SECONDS < time.time()

    def remember(self, reader: str) -> None:
        """After a write for ``reader`` committed: its reads stay on the primary until the replica has it."""
        try:
            position = current_position(self.primary)
        except Exception as exc:  # the write committed; its writer reads the primary until the mark expires
            log.warning("read replica: the primary's WAL position could not be read (%s)", type(exc).__name__)
            position = NOT_KNOWN
        self.marks.raise_to(reader, position, time.time())

    def fell_over(self, exc: BaseException) -> bool:
        """A read on the replica raised ``exc``.  True when it is the database's failure, which the primary then
        answers: a replica that is unreachable also serves no one until the poller reaches it again (reported
        once); a query the replica cancelled (a conflict with recovery) or refused moves only that read."""
        if not isinstance(exc, (DBAPIError, PoolTimeout, self.engine.dialect.loaded_dbapi.Error)):
            return False
        sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None)
        if sqlstate is None or sqlstate.startswith(("08", "57P")):  # no answer, connection lost, shutting down
            self.state = DOWN
            self._report(f"unreachable ({type(exc).__name__})")
            self.engine.dispose()  # its pooled connections are dead
        return True

    # -- the poller ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            wait = self.poll_seconds
            if self._failures:
                wait = BACKOFF_SECONDS[min(self._failures, len(BACKOFF_SECONDS)) - 1]
            self._stop.wait(wait)

    def poll(self) -> None:
        """Read the replica's position and lag once, and decide whether it serves."""
        now = time.monotonic()
        # The primary's first: a replica that has replayed it holds every commit made before ``now``.  The primary's
        # own trouble is reported by the requests and /readyz.
        with contextlib.suppress(Exception):
            self._positions.append((now, primary_write_position(self.primary)))
        try:
            with self.engine.connect() as conn:
                in_recovery, replay_text, since_commit = conn.execute(_STATUS_SQL).one()
        except Exception as exc:
            self._failures += 1
            self.state = DOWN
            self.engine.dispose()
            self._report(f"unreachable ({type(exc).__name__})")
            return
        self._failures = 0
        if not in_recovery or replay_text is None:
            self.state = DOWN
            self._report("not a streaming replica (not in recovery: promoted, or the URL names a primary)")
            return
        replay = parse_lsn(replay_text)
        while self._positions and self._positions[0][1] <= replay:
            self._replayed_through = self._positions.popleft()[0]
        behind = None if self._replayed_through is None else now - self._replayed_through
        serving = behind is not None and behind <= MAX_BEHIND_SECONDS
        if not self._positions:
            lag: float | None = 0.0  # caught up: nothing the primary had written is left to replay
        else:
            lag = None if since_commit is None else max(0.0, since_commit)
        self.state = ReplicaState(up=True, serving=serving, replay=replay, lag_seconds=lag)
        if serving:
            self._recovered()
        elif behind is not None:
            self._report(f"{behind:.0f} s behind the primary (more than {MAX_BEHIND_SECONDS:.0f} s)")

    def _report(self, problem: str) -> None:
        """Once per outage (requests and the poller both find it): a warning per failed request would flood."""
        with self._lock:
            first, self._problem = self._problem is None, self._problem or problem
        if first:
            log.warning("read replica %s: reads go to the primary; trying the replica again shortly", problem)

    def _recovered(self) -> None:
        with self._lock:
            was, self._problem = self._problem, None
        if was is not None:
            log.warning("read replica serving again: callers' reads go to it")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()
        self.marks.close()


def build_replica(settings: Settings, primary_reads: Engine) -> Replica | None:
    """The replica of FHIR_SERVER_READ_REPLICA_URL (None when unset), polled from now on.  ``primary_reads``: the
    primary's autocommit pool (Repository.read_engine), where the write positions are read."""
    if not settings.read_replica_url:
        return None
    problem = replica_problem(settings.database_url, settings.read_replica_url)
    if problem:
        raise ValueError(problem)
    # One table of writes per primary and replica: the processes serving them share it, and no others.
    name = hashlib.blake2b(f"{settings.database_url}\n{settings.read_replica_url}".encode(), digest_size=12)
    return Replica(build_replica_engine(settings), primary_reads, WriteMarks(name.hexdigest()))


# -- which database answered a caller's reads, for /metrics (web/health_routes.py) ---------------------------------
_reads: ContextVar[dict[str, int] | None] = ContextVar("fhir_server_replica_reads", default=None)


@contextmanager
def counting_reads() -> Iterator[dict[str, int]]:
    """Around one request: the caller's reads it made, by the database that answered (``replica``, ``primary``).
    The handlers' threads run in a copy of the request's context, so they add to this same dict."""
    tally: dict[str, int] = {}
    token = _reads.set(tally)
    try:
        yield tally
    finally:
        _reads.reset(token)


def counted(target: str) -> None:
    tally = _reads.get()
    if tally is not None:
        tally[target] = tally.get(target, 0) + 1

"""Engine construction for the two supported databases (SQLite embedded default, PostgreSQL production)."""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url

from fhir_server.config import Settings
from fhir_server.store import secret_store
from fhir_server.store.sqlite_writer import AUTOCHECKPOINT_PAGES

Database: TypeAlias = Engine
"""The database handle as code outside store/ names it (only store/ imports SQLAlchemy).  Outside store/ it is
only held and passed to store functions: the SQL, and the connections it runs on, stay in store/."""


def normalise_url(url: str) -> str:
    """Accept the libpq-style ``postgresql://`` and point it at psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# Statements stay prepared (no re-parsing), but PostgreSQL plans each execution for its actual values: search
# parameters are skewed (one patient's 100 Observations among a million), and a generic plan chosen for "any
# patient" can be a nested loop over the whole index (seen here: seconds instead of a millisecond).  The exception
# is the hot path's fixed statements, whose plans cannot depend on the values and are kept (fixed.py).
POSTGRES_CONNECT_ARGS = {"options": "-c plan_cache_mode=force_custom_plan"}
# The read pools (autocommit, no transaction) instead prepare only the statements that ask for it: a read by id
# (Repository._read_row, prepare=True), whose generic plan is the primary-key look-up whatever the id, is then
# planned once per connection; searches are never prepared there, so PostgreSQL plans each for its values.
# Re-planning every read by id (force_custom_plan) cost the read ~15 % of its throughput (bench/core.py).
# (psycopg: None would disable prepare=True too; a threshold never reached leaves it to each statement.)
READ_POOL_CONNECT_ARGS: dict[str, Any] = {"prepare_threshold": 2**31 - 1}


def burst(settings: Settings) -> int:
    """Connections a pool may open beyond its size for a burst (config.py: db_pool_size)."""
    return max(2, settings.db_pool_size // 4)


def build_engine(settings: Settings) -> Engine:
    engine = _build_engine(settings)
    secret_store.bind(engine, settings)  # the secret key travels with the engine (store/secret_store.py)
    return engine


def _build_engine(settings: Settings) -> Engine:
    url = make_url(normalise_url(settings.database_url))
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    return create_engine(
        url,
        connect_args=POSTGRES_CONNECT_ARGS,
        pool_size=settings.db_pool_size,
        max_overflow=burst(settings),
        # No pool_pre_ping: it costs a round trip per request.  A dropped connection fails one request with 503
        # (transient) and SQLAlchemy then discards the whole stale pool, so the server recovers by itself.
        pool_recycle=1800,
    )


def build_read_engine(settings: Settings, write_engine: Engine) -> Engine:
    """Reads outside a write need no transaction.  On PostgreSQL a pool of autocommit connections saves the
    BEGIN/ROLLBACK round trips of every read.  It always reads the primary (workers, claims and access checks
    must never read a lagging replica): a caller's reads may go to the replica's own pool instead
    (build_replica_engine).  SQLite shares the one engine."""
    if write_engine.dialect.name != "postgresql":
        return write_engine
    # Searches run on this pool and must be planned for their values: were they prepared (psycopg does after a
    # statement's fifth run), PostgreSQL might keep a generic plan made for "any patient".  Measured
    # (bench/scaleout.py's clinician search, 2,000 scored submissions, statistics gathered): 20 ms per search with
    # the generic plan, 6.9 ms planned for its values.  Hence READ_POOL_CONNECT_ARGS.
    read_engine = create_engine(
        make_url(normalise_url(settings.database_url)),
        connect_args=READ_POOL_CONNECT_ARGS,
        isolation_level="AUTOCOMMIT",
        pool_size=settings.db_pool_size,
        max_overflow=burst(settings),
        pool_recycle=1800,
    )
    secret_store.bind(read_engine, settings)
    return read_engine


REPLICA_CONNECT_ARGS = {
    "connect_timeout": 2,  # seconds (libpq's smallest)
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,  # milliseconds: unacknowledged data on a dead link fails the read
    **READ_POOL_CONNECT_ARGS,  # searches planned for their values, as on the primary's read pool
}


def build_replica_engine(settings: Settings) -> Engine:
    """The read replica's pool (FHIR_SERVER_READ_REPLICA_URL; store/replica.py routes to it), autocommit as the
    primary's read pool: a read needs no transaction, and one held open on a replica delays its replay (or is
    cancelled by it).  Short connect and TCP timeouts: a replica that vanished must not hold a request for long,
    since the primary can answer it instead."""
    return create_engine(
        make_url(normalise_url(settings.read_replica_url)),
        isolation_level="AUTOCOMMIT",
        connect_args=REPLICA_CONNECT_ARGS,
        pool_size=settings.db_pool_size,
        max_overflow=burst(settings),
        pool_recycle=1800,
    )


def _sqlite_engine(url: Any, settings: Settings) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout_ms / 1000},
        pool_size=settings.db_pool_size,
        max_overflow=burst(settings),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defer the write lock, which turns two
        # concurrent writers into a deadlock-style SQLITE_BUSY instead of a queue).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        # WAL is a property of the file: set it once, so opening a connection never needs a write lock.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: commits are not fsynced (checkpoints are), so a commit survives an application or
        # server crash, and a power loss can undo only the transactions since the last checkpoint.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run out of the writers' queue (sqlite_writer.py); SQLite's own only as a backstop.
        cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("fhir_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine

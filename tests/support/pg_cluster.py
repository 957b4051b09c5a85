"""A throwaway PostgreSQL primary with a streaming replica, for the read-replica tests (tests/ops/test_replica.py).

The shared test cluster does not accept replication connections, so this makes its own small pair from the server
binaries (``/usr/lib/postgresql/<version>/bin``, else PATH): ``initdb`` a primary (trust, replication allowed from
loopback, ``wal_level=replica``, fsync off), ``pg_basebackup -R`` it into a replica and start both on free loopback
ports.  PostgreSQL refuses to run as root: as root, the commands run as the ``postgres`` OS user (``runuser``), in
folders it owns.  Both clusters are stopped and their folders removed on leaving, also after a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import free_port

TOOLS = ("initdb", "pg_ctl", "pg_basebackup")
DATABASE = "fhir"
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found in /usr/lib/postgresql/*/bin or on PATH "
    "(install the PostgreSQL server package)"
)
# Small and quick: a test cluster's durability does not matter, its start-up time does.
PRIMARY_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
wal_level = replica
max_wal_senders = 4
wal_keep_size = '64MB'
hot_standby = on
max_connections = 60
shared_buffers = '16MB'
fsync = off
log_min_messages = warning
"""
HBA = """
local all all trust
host all all 127.0.0.1/32 trust
local replication all trust
host replication all 127.0.0.1/32 trust
"""


def server_binaries() -> Path | None:
    """The newest installed version's bin folder holding every tool, else the folder of PATH's ``initdb``."""
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda f: int(Path(f).parent.name or 0))
    for folder in reversed(folders):
        if all((Path(folder) / tool).is_file() for tool in TOOLS):
            return Path(folder)
    found = shutil.which("initdb")
    if found and all(shutil.which(tool) for tool in TOOLS):
        return Path(found).parent
    return None


def require_server_binaries() -> Path:
    """Skip (saying why) without the binaries, or as root without a ``postgres`` user to run them; under CI, where
    they are part of the environment, fail instead."""
    folder = server_binaries()
    missing = MISSING if folder is None else None
    if folder is not None and os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing = "running as root, and there is no postgres OS user to run the PostgreSQL server as"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: CI must run the read-replica tests", pytrace=False)
        pytest.skip(f"{missing}: the read-replica tests skip")
    assert folder is not None
    return folder


class PrimaryWithReplica:
    """``with PrimaryWithReplica(bin) as pair:`` — ``pair.primary_url`` and ``pair.replica_url`` name the database
    ``fhir`` on each (postgresql:// URLs as FHIR_SERVER_* settings take them)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="fhir-replica-"))
        self.primary_port, self.replica_port = free_port(), free_port()
        self.primary_data, self.replica_data = self.root / "primary", self.root / "replica"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def primary_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/{DATABASE}"

    @property
    def replica_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.replica_port}/{DATABASE}"

    # -- the clusters ---------------------------------------------------------------------------------------------
    def __enter__(self) -> PrimaryWithReplica:
        try:
            self._run("initdb", "-D", self.primary_data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")  # fmt: skip
            settings = PRIMARY_SETTINGS.format(port=self.primary_port, sockets=self.root)
            self._append(self.primary_data / "postgresql.conf", settings)
            (self.primary_data / "pg_hba.conf").write_text(HBA)
            self._start(self.primary_data)
            with self.connect(self.primary_port, "postgres") as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                      "-D", self.replica_data, "-R", "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
            self._append(self.replica_data / "postgresql.conf", f"port = {self.replica_port}\n")
            self.start_replica()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for data in (self.replica_data, self.primary_data):
            if (data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def start_replica(self) -> None:
        self._start(self.replica_data)

    def stop_replica(self) -> None:
        """Immediately, as a crash or a pulled cable would: no goodbye to its clients."""
        self._run("pg_ctl", "-D", self.replica_data, "-m", "immediate", "stop")

    # -- replay ---------------------------------------------------------------------------------------------------
    def pause_replay(self) -> None:
        with self.connect(self.replica_port) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica's replay did not pause")
                time.sleep(0.02)

    def resume_replay(self) -> None:
        with self.connect(self.replica_port) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def connect(self, port: int, database: str = DATABASE) -> Any:
        import psycopg

        return psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{database}", autocommit=True, connect_timeout=5)

    # -- helpers --------------------------------------------------------------------------------------------------
    def _start(self, data: Path) -> None:
        self._run("pg_ctl", "-D", data, "-l", data.with_suffix(".log"), "-w", "-t", "60", "start")

    def _append(self, path: Path, text: str) -> None:
        with path.open("a") as conf:
            conf.write(text)

    def _run(self, tool: str, *args: Any, check: bool = True) -> None:
        command = [str(self.binaries / tool), *map(str, args)]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            logs = " | ".join(p.read_text()[-1500:] for p in self.root.glob("*.log"))
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-1500:]} {logs}")

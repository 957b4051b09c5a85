"""``fhir-server backup DEST``: the SQLite database copied while the server runs (fhir_server/store/backup.py); for
PostgreSQL, the pg_dump command to use instead (README, "Backups and restore")."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fhir_server.config import Settings
from fhir_server.console import progress_bar

NOT_DONE = 2  # exit status when the command points elsewhere instead of backing up (PostgreSQL)


def add_backup_command(commands: Any) -> None:
    """Mount ``backup`` on the main parser's subcommands."""
    backup = commands.add_parser(
        "backup", help="copy the SQLite database while the server runs (PostgreSQL: prints the pg_dump command)"
    )
    backup.add_argument("dest", type=Path, help="the backup file to write (its folder must exist)")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    backup.set_defaults(func=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    from fhir_server.store.backup import BackupError, backend_name, backup_sqlite, sqlite_file

    url = Settings().database_url
    try:
        if backend_name(url) != "sqlite":
            print(
                "fhir-server backup: the database is PostgreSQL, which this command does not copy: use pg_dump "
                '(custom format; password from PGPASSWORD or ~/.pgpass), see README "Backups and restore":\n'
                f"  {pg_dump_command(url, args.dest)}",
                file=sys.stderr,
            )
            return NOT_DONE
        summary = backup_sqlite(
            sqlite_file(url),
            args.dest,
            force=args.force,
            on_progress=lambda done, total: progress_bar("backing up (pages)", done, total),
        )
    except BackupError as exc:
        print(f"fhir-server backup: {exc}", file=sys.stderr)
        return 1
    print(
        f"backup written: {summary.path} ({_size(summary.size)}; {summary.resources} resources, "
        f"{summary.deleted} deleted, {summary.versions} versions; schema revision {summary.revision})"
    )
    # The one thing a restore needs that is deliberately not in the database (docs/security.md, "Secrets at rest").
    print(
        "fhir-server backup: the secret key (FHIR_SERVER_SECRET_KEY or its file) is not in the backup: keep it, "
        "apart from it",
        file=sys.stderr,
    )
    return 0


def pg_dump_command(database_url: str, dest: Path) -> str:
    """The pg_dump line for this database, without its password (in the URL or its query): a command printed on a
    terminal ends up in logs and shell history."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0] if "@" in parts.netloc else ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    plain = urlunsplit(("postgresql", f"{user}@{host}" if user else host, parts.path, query, ""))
    return f"pg_dump --format=custom --file={shlex.quote(str(dest))} --dbname={shlex.quote(plain)}"


def _size(size: int) -> str:
    value, unit = float(size), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"

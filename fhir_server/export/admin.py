"""``fhir-server export list|cancel``: the administrator's view of Bulk Data export jobs.  cli.py only mounts these
parsers.  Nothing here shows patient data: ids, clients, types and counts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_server.config import Settings
from fhir_server.console import bar, database_command
from fhir_server.export import jobs
from fhir_server.export.storage import DirectoryStorage


def add_commands(commands: Any) -> None:
    """Mount ``export`` on the main parser's subcommands."""
    export = commands.add_parser("export", help="Bulk Data export jobs")
    export_commands = export.add_subparsers(dest="export_command", required=True)
    listing = export_commands.add_parser("list", help="list export jobs (a progress bar for running ones)")
    listing.set_defaults(func=database_command(_list))
    cancel = export_commands.add_parser("cancel", help="stop an export and remove its files")
    cancel.add_argument("id", help="a job id from 'export list'")
    cancel.set_defaults(func=database_command(_cancel))


def describe(job: jobs.ExportJob) -> str:
    """One line: id, status, client, level and what it has done (a bar while it runs)."""
    level = f"Group/{job.request.group_id}" if job.request.level == "group" else job.request.level
    head = f"{job.id}  {job.status:<9}  {job.client[:40]:<40}  {level:<12}  {job.created_at:%Y-%m-%d %H:%M}"
    if job.status == "running":
        detail = f"{bar(job.types_done, job.types_total, 20)} {job.progress()}"
    elif job.status == "completed":
        until = f", files until {job.expires_at:%Y-%m-%d %H:%M} UTC" if job.expires_at else ""
        detail = f"{len(job.files)} files, {job.resources_written} resources{until}"
    elif job.status == "failed":
        detail = f"failed: {job.error or 'unknown reason'}"
    else:
        detail = f"queued: {job.types_total} types"
    return f"{head}  {detail}"


def _list(args: argparse.Namespace, engine: Any) -> int:
    found = jobs.listing(engine)
    if not found:
        print("no export jobs")
        return 0
    for job in found:
        print(describe(job))
    return 0


def _cancel(args: argparse.Namespace, engine: Any) -> int:
    job = jobs.get(engine, args.id)
    if job is None:
        print(f"error: there is no export job {args.id[:40]}", file=sys.stderr)
        return 1
    # The row goes first: the server running the job stops at its next page and removes what it wrote (and any
    # server's sweep removes files left in a folder this command cannot see).
    jobs.remove(engine, DirectoryStorage(Settings().export_dir), job.id)
    print(f"export job {job.id} {'cancelled' if job.active else 'removed'}; its files are removed")
    return 0

"""Audit retention: the AuditEvents of reads and searches older than ``FHIR_SERVER_AUDIT_RETENTION_DAYS`` are
removed with every version and index row; those of writes, operations and sign-in refusals are kept (0, the default,
keeps every one).  A read or search is what auth/audit.py records with a ``subtype`` of IHE BALP's Read and Query
patterns (restful-interaction read, vread, search, history).

Removed in batches of short transactions (store/audit_retention.py) by a sweep of the server process, started by
app.py and run at start and every ``POLL_SECONDS``, or at once by ``fhir-server audit prune [--days N]``.  Several
server processes on one database may sweep at the same time: a batch removes the rows it could lock, passing over
those another sweep holds, so sweeps share the work and never wait on each other.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server.background import BackgroundWorker
from fhir_server.console import database_command, progress_bar
from fhir_server.store import audit_retention as store
from fhir_server.store.expunge import remove
from fhir_server.store.records import utc_now
from fhir_server.store.repository import Repository, WriteSession

log = logging.getLogger("fhir_server.audit")

RESTFUL = "http://hl7.org/fhir/restful-interaction"
READ_SUBTYPES = ("read", "vread", "search-type", "search-system", "history-instance", "history-type", "history-system")
BATCH = 500
POLL_SECONDS = 3600.0  # a day's retention need not be exact to the minute


@dataclass
class Pruned:
    examined: int = 0  # AuditEvents older than the cut-off looked at
    removed: int = 0  # of them, records of reads and searches, removed
    versions: int = 0
    passed_over: int = 0  # reads another transaction held when this sweep came by (or removed first)
    before: datetime | None = None

    @property
    def kept(self) -> int:
        return self.examined - self.removed


def prune(
    repo: Repository,
    days: int,
    *,
    after: store.Cursor | None = None,
    progress: Callable[[int, int], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> tuple[Pruned, store.Cursor | None]:
    """Remove the read AuditEvents stored more than ``days`` ago, from the cursor ``after`` on.  Returns the counts
    and the cursor the next sweep may start from (everything before it is pruned or kept for good)."""
    pruned = Pruned(before=utc_now() - timedelta(days=days))
    total = store.count_older(repo.read_engine, pruned.before) if progress else 0
    while not stopping():
        batch = store.older_batch(repo.read_engine, pruned.before, after, (RESTFUL, READ_SUBTYPES), BATCH)
        if not batch:
            break
        reads = [event_id for event_id, _, is_read in batch if is_read]
        if reads:
            counts = repo.write(lambda session, ids=reads: _remove(session, ids))
            pruned.removed += counts["resources"]
            pruned.versions += counts["versions"]
            pruned.passed_over += len(reads) - counts["resources"]
        pruned.examined += len(batch)
        after = (batch[-1][1], batch[-1][0])
        if progress:
            progress(min(pruned.examined, total), total)
    if progress and pruned.examined < total:  # another sweep took some: the bar still ends
        progress(total, total)
    return pruned, after


def _remove(session: WriteSession, event_ids: list[str]) -> dict[str, int]:
    claimed = store.claim(session, event_ids)  # what another sweep holds now, it removes
    return remove(session, [("AuditEvent", event_id) for event_id in claimed])


class RetentionWorker(BackgroundWorker):
    """The sweep in the server process: a whole sweep per poll, resumed from where the last one stopped."""

    name = "audit-retention"

    def __init__(self, repo: Repository, days: int, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__(poll_seconds, 10.0, log)
        self.repo, self.days = repo, days
        self._after: store.Cursor | None = None

    def run_once(self) -> bool:
        pruned, after = prune(self.repo, self.days, after=self._after, stopping=lambda: self.stopping)
        # the next sweep starts where this one ended, or from the start when it passed over some still to remove
        self._after = None if pruned.passed_over else after
        if pruned.removed:
            log.info("audit retention: %d read AuditEvents older than %d days removed", pruned.removed, self.days)
        return False  # one sweep per poll


# -- fhir-server audit prune ------------------------------------------------------------------------------------
def add_commands(commands: Any) -> None:
    """Mount ``audit`` on the main parser's subcommands (cli.py)."""
    audit = commands.add_parser("audit", help="the audit trail (AuditEvents)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    prune_parser = audit_commands.add_parser(
        "prune", help="remove the AuditEvents of reads and searches older than the retention (writes are kept)"
    )
    prune_parser.add_argument(
        "--days", type=int, help="older than this many days (default: FHIR_SERVER_AUDIT_RETENTION_DAYS)"
    )
    prune_parser.set_defaults(func=database_command(_prune))


def _prune(args: argparse.Namespace, engine: Any) -> int:
    from fhir_server.config import Settings
    from fhir_server.search.indexer import SearchIndexer
    from fhir_server.search.registry import default_registry

    days = args.days if args.days is not None else Settings().audit_retention_days
    if days < 1:
        print(
            "error: no retention to apply: give --days N (at least 1) or set FHIR_SERVER_AUDIT_RETENTION_DAYS",
            file=sys.stderr,
        )
        return 1
    repo = Repository(engine, SearchIndexer(default_registry()))
    pruned, _ = prune(repo, days, progress=lambda done, total: progress_bar("pruning", done, total))
    before = f"{pruned.before:%Y-%m-%d %H:%M} UTC" if pruned.before else "?"
    print(
        f"{pruned.removed} AuditEvents of reads and searches stored before {before} ({days} days) removed, with "
        f"{pruned.versions} versions; {pruned.kept} older ones kept (writes, operations, refused sign-ins)"
    )
    return 0

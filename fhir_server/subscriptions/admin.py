"""``fhir-server subscriptions list|retry``: the administrator's view of topic-based subscriptions.  cli.py only
mounts these parsers.  Nothing here shows patient data: ids, topics, statuses, counts and the error's reason
(endpoints are shown by host only: a URL's path or query could carry anything)."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import urlsplit

from fhir_server.console import database_command
from fhir_server.store import subscription_store as store

STATUSES = (store.REQUESTED, store.ACTIVE, store.ERROR, store.OFF)


def add_commands(commands: Any) -> None:
    """Mount ``subscriptions`` on the main parser's subcommands."""
    parser = commands.add_parser("subscriptions", help="topic-based subscriptions and their notifications")
    sub = parser.add_subparsers(dest="subscriptions_command", required=True)
    listing = sub.add_parser("list", help="list subscriptions with their status and undelivered events")
    listing.add_argument("--status", choices=STATUSES)
    listing.set_defaults(func=database_command(_list))
    retry = sub.add_parser("retry", help="resume subscriptions in error: a new handshake, then their events in order")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="a Subscription id from 'subscriptions list --status error'")
    target.add_argument("--all-errors", action="store_true", help="every subscription in error")
    retry.set_defaults(func=database_command(_retry))


def _list(args: argparse.Namespace, engine: Any) -> int:
    rows = store.list_all(engine, args.status)
    if not rows:
        print(f"no {args.status} subscriptions" if args.status else "no subscriptions")
        return 0
    for row in rows:
        host = urlsplit(row["endpoint"]).hostname or "?"
        pending = store.count_pending(engine, row["id"])
        line = (
            f"{row['id']}  {row['status']:<9}  {row['topic'].rsplit('/', 1)[-1]}  to {host}  "
            f"events {row['events_since_start']} ({pending} undelivered)  failures {row['failures']}"
        )
        print(line + (f"  error: {row['error']}" if row["error"] else ""))
    return 0


def _retry(args: argparse.Namespace, engine: Any) -> int:
    if args.id is not None:
        row = store.get(engine, args.id)
        if row is None:
            print(f"error: there is no subscription {args.id}", file=sys.stderr)
            return 1
        if row["status"] != store.ERROR:
            print(f"error: subscription {args.id} is {row['status']}, not in error: nothing to retry", file=sys.stderr)
            return 1
    count = store.retry(engine, None if args.all_errors else args.id)
    print(f"{count} subscription(s) resumed: handshake, then their undelivered events in order")
    return 0

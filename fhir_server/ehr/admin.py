"""``fhir-server ehr add|list|remove`` and ``fhir-server outbox list|retry``: the administrator's side of EHR
registrations and of deliveries that keep failing, to EHRs and (``--messages``) of email and SMS to clients.
cli.py only mounts these parsers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from fhir_server.console import database_command
from fhir_server.ehr import outbox, registry
from fhir_server.messaging import outbox as messages
from fhir_server.store import ehr_store
from fhir_server.store.crypto import SecretKeyError

# said in one line, exit status 1
EXPECTED = (registry.RegistrationError, outbox.OutboxError, messages.MessageOutboxError, SecretKeyError)


def add_commands(commands: Any) -> None:
    """Mount ``ehr`` and ``outbox`` on the main parser's subcommands."""
    ehr = commands.add_parser("ehr", help="EHRs that launch the app and receive its results")
    ehr_commands = ehr.add_subparsers(dest="ehr_command", required=True)
    add = ehr_commands.add_parser("add", help="register an EHR")
    add.add_argument("--issuer", required=True, help="the EHR's FHIR base URL (the SMART iss)")
    add.add_argument("--client-id", required=True, help="this app's client id at the EHR")
    add.add_argument("--auth", default="private_key_jwt", choices=registry.AUTH_METHODS, help="client authentication")
    # The client secret never comes from argv (ps and shell history show it): standard input or a variable.
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--secret-stdin", action="store_true", help="read the client secret (client_secret_basic) from standard input"
    )
    secret.add_argument("--secret-env", metavar="NAME", help="take the client secret from environment variable NAME")
    secret.add_argument("--secret", nargs="?", const="", help=argparse.SUPPRESS)  # refused with the alternatives
    add.add_argument("--scope", nargs="+", action="extend", help="scopes to request (default: the SRS/ORS write set)")
    add.add_argument(
        "--types", nargs="+", action="extend", help="resource types to write back (default: QR, Observation, Flag, …)"
    )
    add.add_argument("--backend-client-id", help="Backend Services client id at the EHR, when no launch token can")
    add.add_argument("--rate", type=float, help="at most this many requests per second to the EHR")
    add.add_argument("--name", help="a name for lists (default: the issuer's host)")
    add.set_defaults(func=database_command(_ehr_add, EXPECTED))
    ehr_list = ehr_commands.add_parser("list", help="list registered EHRs")
    ehr_list.set_defaults(func=database_command(_ehr_list, EXPECTED))
    remove = ehr_commands.add_parser("remove", help="remove an EHR registration")
    remove.add_argument("id", type=int)
    remove.add_argument("--force", action="store_true", help="even while deliveries to it are pending")
    remove.set_defaults(func=database_command(_ehr_remove, EXPECTED))

    box = commands.add_parser("outbox", help="deliveries of results to EHRs, and messages (email, SMS) to clients")
    box_commands = box.add_subparsers(dest="outbox_command", required=True)
    listing = box_commands.add_parser(
        "list", help="list EHR deliveries, then messages (newest last; a message's recipient is never shown)"
    )
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--dead", action="store_true", help="only rows that stopped being retried")
    which.add_argument(
        "--status", choices=sorted({*outbox.STATUSES, *messages.STATUSES}), help="only rows with this status"
    )
    part = listing.add_mutually_exclusive_group()
    part.add_argument("--ehr", action="store_true", help="only deliveries to EHRs")
    part.add_argument("--messages", action="store_true", help="only messages to clients (email, SMS)")
    listing.set_defaults(func=database_command(_outbox_list, EXPECTED))
    retry = box_commands.add_parser("retry", help="send dead deliveries or messages again")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", type=int, help="an EHR outbox row id from 'outbox list --dead'")
    target.add_argument("--all-dead", action="store_true", help="every dead EHR delivery")
    target.add_argument("--message", type=int, metavar="ID", help="a message row id from 'outbox list --messages'")
    target.add_argument("--all-messages", action="store_true", help="every dead message")
    retry.set_defaults(func=database_command(_outbox_retry, EXPECTED))


def _client_secret(args: argparse.Namespace) -> str | None:
    if args.secret is not None:
        raise registry.RegistrationError(
            "--secret is not accepted (a secret on the command line shows in ps and shell history): "
            "use --secret-stdin, or --secret-env NAME"
        )
    if args.secret_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise registry.RegistrationError("--secret-stdin: standard input held no secret")
        return value
    if args.secret_env:
        value = os.environ.get(args.secret_env, "")
        if not value:
            raise registry.RegistrationError(f"--secret-env: the environment variable {args.secret_env} is not set")
        return value
    return None


def _ehr_add(args: argparse.Namespace, engine: Any) -> int:
    ehr = registry.register(
        engine,
        issuer=args.issuer,
        client_id=args.client_id,
        auth_method=args.auth,
        client_secret=_client_secret(args),
        scope=" ".join(args.scope) if args.scope else None,
        name=args.name,
        resource_types=args.types,
        backend_client_id=args.backend_client_id,
        max_requests_per_second=args.rate,
    )
    print(f"registered EHR {ehr.id}: {ehr.name} ({ehr.issuer})")
    return 0


def _ehr_list(_: argparse.Namespace, engine: Any) -> int:
    rows = [
        [
            str(e.id),
            e.name,
            e.issuer,
            e.client_id,
            e.auth_method + (" (secret set)" if e.client_secret else ""),
            e.backend_client_id or "-",
            f"{e.max_requests_per_second:g}/s" if e.max_requests_per_second else "-",
            " ".join(e.resource_types),
        ]
        for e in registry.all_registrations(engine)
    ]
    if not rows:
        print("no EHRs registered (fhir-server ehr add --issuer URL --client-id ID)")
        return 0
    _table(["id", "name", "issuer", "client id", "auth", "backend client", "rate", "write-back types"], rows)
    return 0


def _ehr_remove(args: argparse.Namespace, engine: Any) -> int:
    if registry.get(engine, args.id) is None:
        raise registry.RegistrationError(f"there is no EHR {args.id}")
    pending = ehr_store.count_pending(engine, args.id)
    if pending and not args.force:
        raise registry.RegistrationError(
            f"{pending} deliveries to EHR {args.id} are pending; wait for them, or --force (they become dead)"
        )
    registry.remove(engine, args.id)
    print(f"removed EHR {args.id}" + (f"; {pending} pending deliveries will be parked as dead" if pending else ""))
    return 0


def _outbox_list(args: argparse.Namespace, engine: Any) -> int:
    status = "dead" if args.dead else args.status
    if not args.messages:
        _ehr_rows(engine, status)
    if not args.ehr:
        if not args.messages:
            print()
        _message_rows(engine, status)
    return 0


def _message_rows(engine: Any, status: str | None) -> None:
    """Messages to clients: what, by which channel, how it went; never to whom (the address identifies them)."""
    print("messages to clients (email, SMS):")
    found = messages.rows(engine, status) if status is None or status in messages.STATUSES else []
    if not found:
        print(f"  no {status} messages" if status else "  none queued")
        return
    _table(
        ["id", "kind", "channel", "status", "attempts", "next attempt (UTC)", "created (UTC)", "last error"],
        [
            [
                str(r.id),
                r.kind,
                r.channel,
                r.status,
                str(r.attempts),
                _when(r.next_attempt_at) if r.status == "pending" else "-",
                _when(r.created_at),
                r.last_error or "-",
            ]
            for r in found
        ],
    )


def _ehr_rows(engine: Any, status: str | None) -> None:
    print("deliveries to EHRs:")
    found = outbox.rows(engine, status) if status is None or status in outbox.STATUSES else []
    if not found:
        print(f"  no {status} deliveries" if status else "  the outbox is empty")
        return
    _table(
        ["id", "ehr", "response", "status", "attempts", "next attempt (UTC)", "created (UTC)", "last error"],
        [
            [
                str(r.id),
                str(r.ehr_id),
                r.response_reference,
                r.status,
                str(r.attempts),
                _when(r.next_attempt_at) if r.status == "pending" else "-",
                _when(r.created_at),
                r.last_error or "-",
            ]
            for r in found
        ],
    )


def _outbox_retry(args: argparse.Namespace, engine: Any) -> int:
    if args.all_messages or args.message is not None:
        count = messages.retry(engine, None if args.all_messages else args.message)
        print(f"{count} dead messages queued again" if args.all_messages else f"message {args.message} queued again")
        return 0
    count = outbox.retry(engine, None if args.all_dead else args.id)
    print(f"{count} dead deliveries queued again" if args.all_dead else f"delivery {args.id} queued again")
    return 0


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for line in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())
